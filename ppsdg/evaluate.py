"""How much of the real data's use a synthetic set keeps, measured the way the literature does."""
import argparse

import torch

from ppsdg import data, local
from ppsdg.runtime import derive_seed
from ppsdg.simplemodel import new_model


def tstr_accuracy(synthetic_set: data.ImageSet, options: argparse.Namespace) -> float:
    """Train-on-synthetic, test-on-real: the classifier trained on synthetic data alone, tested on the
    real held-out set."""
    classifier = new_model(argparse.Namespace(**{**vars(options), "gan": False}))
    local.fit(classifier, local.Examples.from_images(synthetic_set, torch.device("cpu")), options.tstr_epochs,
              options.batch_size, options.learning_rate, options.momentum, derive_seed(options.seed, 0, 0))
    return local.test(classifier, local.test_examples(options, torch.device("cpu")), options.test_batch_size)[1]
