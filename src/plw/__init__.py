"""plw: instruction-tuning with a prompt-loss-weight.

>>> import plw
>>> row = plw.encode(tokenizer, {"prompt": "2+2?", "completion": "4"})          # doctest: +SKIP
>>> trainer = plw.PLWTrainer(model=model, args=args, train_dataset=rows, prompt_loss_weight=0.1)  # doctest: +SKIP
"""

from .data.collate import PaddingCollator
from .data.encode import encode, encode_records
from .data.errors import RecordError
from .data.report import LoadReport
from .loss import plw_loss, signed_labels, target_weights, weighted_nll_sum
from .metrics import StreamingMetrics
from .models import load_model, load_model_and_tokenizer, load_tokenizer
from .weight_policy import StepWeights, WeightPolicy, make_compute_loss_func

__version__ = "0.1.0"


def __getattr__(name: str):
    # The trainer imports transformers.Trainer (slow); load it on first use only.
    if name in ("PLWTrainer", "choice_token_ids"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'plw' has no attribute {name!r}")


__all__ = [
    "LoadReport",
    "PLWTrainer",
    "PaddingCollator",
    "RecordError",
    "StreamingMetrics",
    "choice_token_ids",
    "encode",
    "encode_records",
    "load_model",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "make_compute_loss_func",
    "StepWeights",
    "WeightPolicy",
    "plw_loss",
    "signed_labels",
    "target_weights",
    "weighted_nll_sum",
]
