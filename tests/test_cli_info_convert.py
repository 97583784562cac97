"""``python -m pti_core info`` and ``convert``: exit codes, output files, messages.

The end-to-end cases run ``python -m pti_core`` in a subprocess; the rest call the same
dispatcher in-process (``pti_core.__main__.main``), which keeps the file fast (each subprocess
pays the torch import).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO, golden_dir
from pti_core.generators.checkpoints import load_generator


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pti_core", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """Runs the command line in-process: ``cli("info", path) -> result`` with returncode/stdout/stderr."""
    from pti_core.__main__ import main

    def run(*args: str) -> _Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return _Result(code, captured.out, captured.err)

    return run


def _one_error_line(result, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_info_text_and_json_on_standin_pickle_and_rosinality(cli):
    standin = golden_dir("sg2ada_small") / "standin.pkl"
    result = _cli("info", standin)
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    assert fields["format"] == "nvidia-pkl" and fields["architecture"] == "stylegan2"
    assert (fields["resolution"], fields["num_ws"], fields["w_dim"]) == ("64", "10", "64")
    assert int(fields["params"]) > 1_000_000
    assert fields["sha256"] == hashlib.sha256(standin.read_bytes()).hexdigest()
    result = cli("info", "--json", golden_dir("rosinality_small") / "rosinality.pt")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["format"], info["resolution"], info["num_ws"], info["w_dim"]) == ("rosinality-pt", 32, 8, 64)


def test_convert_then_info_then_refuse_overwrite_then_force(tmp_path, cli):
    source = golden_dir("pti_tuned_tiny") / "model_tuned.pt"
    out = tmp_path / "tuned.safetensors"
    result = _cli("convert", source, out)
    assert result.returncode == 0, result.stderr
    assert out.is_file() and str(out) in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["tuned.safetensors"]  # atomic: no leftovers
    G, converted = load_generator(source), load_generator(out)
    for name, tensor in G.state_dict().items():
        assert torch.equal(converted.state_dict()[name], tensor), name
    info = cli("info", "--json", out)
    assert info.returncode == 0 and json.loads(info.stdout)["format"] == "pti-safetensors"

    before = out.read_bytes()
    _one_error_line(_cli("convert", source, out), str(out), "--force")
    assert out.read_bytes() == before
    forced = cli("convert", "--force", golden_dir("rosinality_small") / "rosinality.pt", out)
    assert forced.returncode == 0, forced.stderr
    assert load_generator(out).img_resolution == 32 and out.read_bytes() != before


def test_convert_never_overwrites_its_input_and_checks_the_suffix(tmp_path, cli):
    converted = tmp_path / "model.safetensors"
    assert cli("convert", golden_dir("pti_tuned_tiny") / "model_tuned.pt", converted).returncode == 0
    digest = hashlib.sha256(converted.read_bytes()).hexdigest()
    _one_error_line(cli("convert", "--force", converted, converted), "input")
    assert hashlib.sha256(converted.read_bytes()).hexdigest() == digest
    _one_error_line(cli("convert", converted, tmp_path / "out.pkl"), ".safetensors")
    assert not (tmp_path / "out.pkl").exists()


def test_bare_state_dict_needs_config_on_the_command_line(tmp_path, cli):
    folder = golden_dir("sg2ada_small")
    weights = folder / "weights.safetensors"
    _one_error_line(cli("info", weights), str(weights), "config")
    out = tmp_path / "from_bare.safetensors"
    result = cli("convert", weights, out, "--config", folder / "config.json")
    assert result.returncode == 0, result.stderr
    inline = json.dumps(json.loads((folder / "config.json").read_text())["init_kwargs"])
    assert cli("info", weights, "--config", inline).returncode == 0
    _one_error_line(cli("info", weights, "--config", "{not json"), "--config")


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + bytes(32), b"\x80\x04\x95" + bytes(4)])
def test_bad_files_exit_2_with_one_line_naming_the_file(tmp_path, cli, content):
    path = tmp_path / "bad model.pkl"
    path.write_bytes(content)
    _one_error_line(cli("info", path), str(path))
    _one_error_line(cli("convert", path, tmp_path / "out.safetensors"), str(path))
    assert not (tmp_path / "out.safetensors").exists()


def test_subprocess_bad_file_exit_code_and_single_line(tmp_path):
    path = tmp_path / "random.pkl"
    path.write_bytes(b"\x80\x04\x95" + bytes(4))
    _one_error_line(_cli("info", path), str(path), "truncated")
