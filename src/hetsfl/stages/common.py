"""Constants shared by the stages."""

DATASET_SHAPES = {"fashion_mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
NUM_CLASSES = 10
# Training method -> (optimisation method whose splits and round latency it uses, engine method).
TRAIN_METHODS = {
    "sfl": ("ao", "sfl"),
    "sfl_fixed": ("fixed_split", "sfl"),
    "sfl_v2": ("ao", "sfl_v2"),
    "fl": ("fl", "fl"),
    "sl": ("sl", "sl"),
}
