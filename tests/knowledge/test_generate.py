"""`packetclip-train kg generate` runs the seed's two prompts against an OpenAI-compatible server and writes a
valid mission; `kg validate` and `kg show` read missions back. The server is a local fake on 127.0.0.1."""

from __future__ import annotations

from packetclip.missions import load_mission
from packetclip_training.cli import main
from packetclip_training.knowledge.graph import graph_problems
from tests.knowledge.fake_llm import FakeLLM

VOCABULARY_ANSWER = """Here are 5 typical vocabularies:
1. Flood
2. SYN
3. Half-open connection
4. Amplification
5. Resource exhaustion
"""
ASSOCIATION_ANSWER = """**Flood**: packet storm, bandwidth saturation
**SYN**: connection request, handshake, flood
Half-open connection:
  - backlog exhaustion
Amplification: reflected traffic
Resource exhaustion: server overload, backlog exhaustion
"""


def answer_by_prompt(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    return VOCABULARY_ANSWER if prompt.startswith("List") else ASSOCIATION_ANSWER


def test_generate_writes_a_valid_dag_from_the_two_prompts(tmp_path, monkeypatch, capsys):
    out = tmp_path / "dos.yaml"
    monkeypatch.setenv("FAKE_LLM_KEY", "sekrit")
    with FakeLLM(answer_by_prompt) as llm:
        code = main(
            [
                "kg",
                "generate",
                "--mission",
                "dos",
                "--event",
                "denial-of-service attacks",
                "--llm-url",
                llm.url,
                "--model",
                "tiny",
                "--api-key-env",
                "FAKE_LLM_KEY",
                "--vocabularies",
                "5",
                "--out",
                str(out),
            ]
        )
    assert code == 0, capsys.readouterr().err
    first, second = llm.requests
    assert first["model"] == "tiny"
    assert first["messages"][-1]["content"].startswith(
        "List 5 typical vocabularies to represent denial-of-service attacks"
    )
    assert "associated words with vocabularies in set K" in second["messages"][-1]["content"]
    assert "half-open connection" in second["messages"][-1]["content"]
    assert second["messages"][-2]["content"] == VOCABULARY_ANSWER  # the second prompt sees the first answer
    assert all(h["Authorization"] == "Bearer sekrit" for h in llm.headers)

    mission = load_mission(out)
    assert mission.key_concepts == (
        "flood",
        "syn",
        "half-open connection",
        "amplification",
        "resource exhaustion",
    )
    assert mission.associated["syn"] == ("connection request", "handshake")  # "flood" is a key concept
    assert mission.associated["half-open connection"] == ("backlog exhaustion",)
    assert graph_problems(mission) == []
    assert "1 duplicates dropped" in capsys.readouterr().out


def test_generate_fails_cleanly_on_useless_answers_and_unreachable_servers(tmp_path, capsys):
    out = tmp_path / "x.yaml"
    with FakeLLM(lambda body: "I cannot help with that.\n\n") as llm:
        code = main(
            ["kg", "generate", "--mission", "x", "--event", "e", "--llm-url", llm.url, "--out", str(out)]
        )
    assert code == 1
    assert "no usable concept" in capsys.readouterr().err
    code = main(
        [
            "kg",
            "generate",
            "--mission",
            "x",
            "--event",
            "e",
            "--llm-url",
            "http://127.0.0.1:9/v1",
            "--out",
            str(out),
        ]
    )
    assert code == 1
    assert "127.0.0.1:9" in capsys.readouterr().err
    assert not out.exists()


def test_validate_and_show(tmp_path, capsys):
    assert main(["kg", "validate"]) == 0
    assert "4 mission(s) valid" in capsys.readouterr().out
    assert main(["kg", "show", "recon"]) == 0
    shown = capsys.readouterr().out
    assert "os fingerprint" in shown and "class port_scan:" in shown
    cyclic = tmp_path / "cyclic.yaml"
    cyclic.write_text(
        "name: c\ndescription: d\nkey_concepts: [a, b]\nassociated: {a: [x]}\nedges: [[x, b], [b, a]]\n"
    )
    assert main(["kg", "validate", str(cyclic)]) == 1
    assert "cycle" in capsys.readouterr().err
    assert main(["kg", "show", "nosuch"]) == 1
