"""Loading, saving, batching, prediction and fine-tuning of classifiers."""
from .finetune import TrainConfig, finetune
from .inference import predict, predict_proba
from .io import Classifier, default_backbone, load_classifier, save_classifier

__all__ = ["Classifier", "TrainConfig", "finetune", "predict", "predict_proba", "default_backbone",
           "load_classifier", "save_classifier"]
