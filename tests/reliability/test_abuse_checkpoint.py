"""A real checkpoint (tiny N-body model, 1 epoch): what users download contains no pickle,
and ``relaxtune verify`` refuses a folder whose files were tampered with.

A tiny rotated-MNIST checkpoint (1 epoch) checks the equivariance test itself: its exported
convolution kernels are plain tensors, so the same noise written into both ``model.ts`` and
``model.safetensors`` gives a consistent folder whose model is no longer equivariant. Only the
measured error can refuse it, whatever tolerance its ``certificate.json`` claims.

The downloaded zip is scanned member by member: no ``.pkl``/``.pt``/``.pth`` name, no member
starting with a pickle opcode, every ``.safetensors`` header well formed (sizes, offsets,
dtypes) and ``model.ts`` loading with ``torch.jit.load`` alone.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from _reliability_support import make_checkpoint
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from service import cli
from service.api import create_app
from service.artifacts import best_dir
from service.settings import Settings
from service.store import JobStore

SAFETENSORS_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"}
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2}
DTYPE_BYTES |= {"I8": 1, "U8": 1, "BOOL": 1}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best")


@pytest.fixture
def folder(checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy of the checkpoint to tamper with."""
    return Path(shutil.copytree(checkpoint, tmp_path / "copy"))


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.training import TrialConfig, train

    config = TrialConfig(
        task="rotated_mnist",
        model={"group": "C4", "width": 4, "depth": 2, "head_hidden": 16},
        data={"train_size": 64, "val_size": 32, "test_size": 32},
        hparams={"optim.batch_size": 32},
        epochs=1,
        seed=0,
        device="cpu",
    )
    out = tmp_path_factory.mktemp("cnn") / "best"
    train(config, out_dir=out)
    return out


@pytest.fixture
def cnn_folder(cnn_checkpoint: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(cnn_checkpoint, tmp_path / "cnn"))


def relaxtune(*argv: str) -> int:
    try:
        return cli.main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


def check_safetensors_header(data: bytes) -> dict[str, Any]:
    """Parse a safetensors file by hand: 8-byte length, JSON header, contiguous data."""
    assert len(data) >= 8
    (size,) = struct.unpack("<Q", data[:8])
    assert 2 <= size <= len(data) - 8 and size < 100 << 20
    header = json.loads(data[8 : 8 + size].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    end = 0
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        assert set(entry) == {"dtype", "shape", "data_offsets"}, name
        assert entry["dtype"] in SAFETENSORS_DTYPES, (name, entry["dtype"])
        start, stop = entry["data_offsets"]
        assert start == end, f"{name}: gap or overlap in the data section"
        count = 1
        for dim in entry["shape"]:
            assert isinstance(dim, int) and dim >= 0
            count *= dim
        assert stop - start == count * DTYPE_BYTES[entry["dtype"]], name
        end = stop
    assert 8 + size + end == len(data), "trailing bytes after the tensors"
    return header


def test_downloaded_checkpoint_contains_no_pickle(checkpoint: Path, tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.upgrade()
    token = store.create_token("alice")
    job = store.create_job("alice", {"name": "x"}, "x")
    store.claim_next("w")
    store.finish(job.id, "succeeded")
    settings = Settings(db=store.url, artifacts=tmp_path / "artifacts")
    shutil.copytree(checkpoint, best_dir(settings.artifacts, job.id))
    with TestClient(create_app(settings, store)) as client:
        response = client.get(
            f"/v1/jobs/{job.id}/best/checkpoint", headers={"Authorization": f"Bearer {token}"}
        )
    store.close()
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = archive.namelist()
    assert {"model.safetensors", "model.ts", "config.json", "certificate.json"} <= set(names)
    for name in names:
        assert not name.endswith((".pkl", ".pickle", ".pt", ".pth", ".bin", ".npy")), name
        head = archive.read(name)[:2]
        # a pickle stream starts with PROTO (0x80) and its version byte
        assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))
    for name in (n for n in names if n.endswith(".safetensors")):
        header = check_safetensors_header(archive.read(name))
        assert header, name
    weights = load_file(str(checkpoint / "model.safetensors"))
    config = json.loads(archive.read("config.json"))
    assert sorted(weights) == sorted(config["state_dict_keys"])
    # model.ts loads with torch.jit.load and nothing else, and runs on the stored inputs
    scripted = torch.jit.load(io.BytesIO(archive.read("model.ts")), map_location="cpu")
    inputs = load_file(str(checkpoint / "inputs.safetensors"))
    with torch.no_grad():
        out = scripted(*(inputs[f"input_{i}"] for i in range(len(inputs))))
    assert torch.isfinite(out).all()


def test_untampered_checkpoint_verifies(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert relaxtune("verify", str(folder)) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True


def _perturb_weight(folder: Path) -> None:
    weights = load_file(str(folder / "model.safetensors"))
    name = sorted(k for k, v in weights.items() if v.is_floating_point() and v.numel())[0]
    weights[name] = weights[name] + 0.01
    save_file(weights, str(folder / "model.safetensors"))


def _perturb_torchscript(folder: Path) -> None:
    scripted = torch.jit.load(str(folder / "model.ts"), map_location="cpu")
    with torch.no_grad():
        param = next(p for p in scripted.parameters() if p.numel())
        param.add_(0.01)
    scripted.save(str(folder / "model.ts"))


def _rename_key_in_config(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["state_dict_keys"][0] = "injected.weight"
    (folder / "config.json").write_text(json.dumps(config))


def _drop_tensor(folder: Path) -> None:
    weights = load_file(str(folder / "model.safetensors"))
    weights.pop(sorted(weights)[0])
    save_file(weights, str(folder / "model.safetensors"))


def _garbage_torchscript(folder: Path) -> None:
    (folder / "model.ts").write_bytes(b"PK\x03\x04 not a TorchScript archive")


def _truncated_safetensors(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _lying_safetensors_header(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + data[8:])


def _pickle_instead_of_torchscript(folder: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, str(folder / "model.ts"))


TAMPERING = {
    "safetensors-weight-changed": _perturb_weight,
    "torchscript-weight-changed": _perturb_torchscript,
    "config-keys-changed": _rename_key_in_config,
    "safetensors-tensor-dropped": _drop_tensor,
    "torchscript-garbage": _garbage_torchscript,
    "torchscript-replaced-by-pickle": _pickle_instead_of_torchscript,
    "safetensors-truncated": _truncated_safetensors,
    "safetensors-header-lies": _lying_safetensors_header,
}


@pytest.mark.parametrize("tamper", sorted(TAMPERING))
def test_verify_refuses_a_tampered_checkpoint(
    folder: Path, capsys: pytest.CaptureFixture[str], tamper: str
) -> None:
    TAMPERING[tamper](folder)
    code = relaxtune("verify", str(folder))
    out, err = capsys.readouterr()
    assert code == 1, (code, out[-2000:], err[-2000:])
    assert "Traceback" not in err
    if out.strip():  # a report was printed: it fails and says what does not match
        report = json.loads(out)
        assert report["passed"] is False and report["problems"]
    else:  # refused before a report could be made: one line naming the problem
        assert "checkpoint refused" in err, err


def _break_equivariance_consistently(folder: Path, key: str = "body.conv1.weight") -> None:
    """Add the same noise to one convolution kernel in model.safetensors and model.ts."""
    weights = load_file(str(folder / "model.safetensors"))
    noise = 0.1 * torch.randn(weights[key].shape, generator=torch.Generator().manual_seed(0))
    weights[key] = weights[key] + noise
    save_file(weights, str(folder / "model.safetensors"))
    scripted = torch.jit.load(str(folder / "model.ts"), map_location="cpu")
    with torch.no_grad():
        dict(scripted.named_parameters())[key].add_(noise)
    scripted.save(str(folder / "model.ts"))


def _verify_report(folder: Path, capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, dict]:
    code = relaxtune("verify", str(folder), *options)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, json.loads(out)


def test_verify_reports_measured_and_stored_figures(
    cnn_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certificate = json.loads((cnn_folder / "certificate.json").read_text())
    code, report = _verify_report(cnn_folder, capsys)
    assert code == 0 and report["passed"] and report["problems"] == []
    assert report["tolerance"] == 1e-4
    assert set(report["errors"]) == set(certificate["errors"])
    assert report["max_error_exact"] == max(report["errors"][k] for k in certificate["exact_elements"])
    # float rounding of the exact C4 rotations through the recomputed head statistics (the
    # same bound as tests/workers/test_training.py); a broken projection gives > 1e-2
    assert report["max_error_exact"] < 5e-5
    assert report["stored"] == {
        "errors": certificate["errors"],
        "max_error_exact": certificate["max_error_exact"],
        "tolerance": certificate["tolerance"],
        "passed": True,
    }


@pytest.mark.parametrize("claimed_tolerance", [None, 1.0, 1e9])
def test_verify_refuses_a_consistently_tampered_non_equivariant_model(
    cnn_folder: Path, capsys: pytest.CaptureFixture[str], claimed_tolerance: float | None
) -> None:
    _break_equivariance_consistently(cnn_folder)
    if claimed_tolerance is not None:  # the certificate also lies: huge tolerance, zero errors
        certificate = json.loads((cnn_folder / "certificate.json").read_text())
        certificate["tolerance"] = claimed_tolerance
        certificate["errors"] = {k: 0.0 for k in certificate["errors"]}
        certificate["max_error_exact"] = 0.0
        certificate["passed"] = True
        (cnn_folder / "certificate.json").write_text(json.dumps(certificate))
    code, report = _verify_report(cnn_folder, capsys)
    assert code == 1 and report["passed"] is False
    # the files agree with each other: only the measured equivariance error refuses the folder
    assert len(report["problems"]) == 1 and "equivariance error" in report["problems"][0]
    assert report["tolerance"] == 1e-4
    assert report["max_error_exact"] > 1e-2
    if claimed_tolerance is not None:
        assert report["stored"]["tolerance"] == claimed_tolerance
        assert report["stored"]["max_error_exact"] == 0.0


def test_verify_tolerance_option_is_the_one_applied(
    cnn_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _verify_report(cnn_folder, capsys, "--tolerance", "1e-12")
    assert code == 1 and report["tolerance"] == 1e-12  # float32 round-off is above 1e-12
    assert report["max_error_exact"] > 1e-12
    _break_equivariance_consistently(cnn_folder)
    code, report = _verify_report(cnn_folder, capsys, "--tolerance", "10")
    assert code == 0 and report["passed"] and report["tolerance"] == 10.0
    for bad in ("0", "-1", "nan", "inf", "x"):
        assert relaxtune("verify", str(cnn_folder), "--tolerance", bad) == 2
