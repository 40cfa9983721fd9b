"""Proving the log: `auditline verify` on an untouched export and on each kind of
tampering (on a copy of the filesystem store's bucket); proofs of single events."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auditline.interceptor.integrity import (
    LocalDirectory,
    SigningKey,
    VerifierKey,
    prove,
    verify_proof,
)
from tests.support.integrity_checks import (
    ADMIN,
    finding_kinds,
    make_calls,
    manifests,
    objects_dir,
    verifier_keys,
    verify,
    wait_past,
)
from tests.support.serve import ServeProcess


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[VerifierKey]]:
    """A server's exported log in several batches and both formats' worth of files."""
    data_dir = tmp_path_factory.mktemp("proven") / "data"
    args = ["--export-interval", "0.3", "--usage-snapshot-interval", "0"]
    process = ServeProcess(data_dir, args=args, env=ADMIN).start()
    try:
        for _ in range(4):
            before = len(manifests(objects_dir(data_dir)))
            make_calls(process.target, 30)
            # Each round of calls is exported (a batch, a manifest) before the next.
            wait_past(lambda: len(manifests(objects_dir(data_dir))), before)
        assert process.terminate() == 0
    finally:
        process.stop()
    return objects_dir(data_dir), verifier_keys(data_dir)


def _copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(source, target)
    return target


def _data_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.jsonl.gz") if "integrity" not in p.parts)


def _rewrite(path: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    lines = gzip.decompress(path.read_bytes()).splitlines()
    path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in change(lines))))


def _largest(root: Path) -> Path:
    return max(_data_files(root), key=lambda p: len(gzip.decompress(p.read_bytes()).splitlines()))


def test_an_untouched_log_is_proven(exported: tuple[Path, list[VerifierKey]]) -> None:
    root, keys = exported
    report = verify(root, keys)
    assert report.findings == []
    assert report.ok
    (node,) = report.nodes
    assert node.first_seq == 1
    assert node.events == node.last_seq == node.tree_size
    assert node.checkpoints >= 4  # several batches, each with its checkpoint


def _edit_field(lines: list[bytes]) -> list[bytes]:
    record = json.loads(lines[1])
    record["ApiEvent"]["Response"]["ResponseStatus"] = "OK"
    record["ApiEvent"]["Response"]["ResponseCode"] = 0
    record["ApiEvent"]["Request"]["SourceIP"] = "10.9.9.9"
    return [lines[0], json.dumps(record).encode(), *lines[2:]]


def _insert(lines: list[bytes]) -> list[bytes]:
    record = json.loads(lines[0])
    record["ApiEvent"]["EventId"] = str(uuid.uuid4())
    record["ApiEvent"]["Sequence"] = "999999"
    return [*lines, json.dumps(record).encode()]


def _batch_manifests(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    found = [(p, json.loads(p.read_text())) for p in manifests(root)]
    return sorted(((p, m) for p, m in found if m["files"]), key=lambda item: item[1]["first_seq"])


def _truncate(root: Path) -> None:
    """Cut the log's tail: the last batch's files and manifest go."""
    path, manifest = _batch_manifests(root)[-1]
    for entry in manifest["files"]:
        (root / entry["key"]).unlink()
    path.unlink()


def _forge(root: Path) -> None:
    path, manifest = _batch_manifests(root)[1]
    origin, size, _root, rest = manifest["checkpoint"].split("\n", 3)
    manifest["checkpoint"] = "\n".join([origin, size, "A" * 43 + "=", rest])
    path.write_text(json.dumps(manifest))


def _rewind(root: Path) -> None:
    """A manifest whose tree before it is not the one the checkpoint before signed."""
    path, manifest = _batch_manifests(root)[2]
    hashes = manifest["frontier"]["hashes"]
    hashes[0] = hashes[0][::-1] if hashes[0] != hashes[0][::-1] else "B" * 43 + "="
    path.write_text(json.dumps(manifest))


def _unlisted(root: Path) -> None:
    source = _data_files(root)[0]
    shutil.copy(source, source.with_name("f00d-000000000001-000000000002.jsonl.gz"))


MUTATIONS: dict[str, tuple[Callable[[Path], None], set[str]]] = {
    "modified event": (
        lambda root: _rewrite(_largest(root), _edit_field),
        {"modified-file", "changed-events"},
    ),
    "deleted file": (lambda root: _largest(root).unlink(), {"deleted-file"}),
    "missing event": (
        lambda root: _rewrite(_largest(root), lambda lines: lines[:1] + lines[2:]),
        {"modified-file", "missing-events"},
    ),
    "inserted event": (lambda root: _rewrite(_largest(root), _insert), {"inserted-event"}),
    "reordered events": (
        lambda root: _rewrite(_largest(root), lambda lines: [lines[1], lines[0], *lines[2:]]),
        {"modified-file", "reordered-events"},
    ),
    "duplicated event": (
        lambda root: _rewrite(_largest(root), lambda lines: [*lines, lines[0]]),
        {"modified-file", "duplicated-event"},
    ),
    "truncated tail": (lambda root: _truncate(root), {"truncated-tail"}),
    "forged checkpoint": (lambda root: _forge(root), {"forged-checkpoint"}),
    "checkpoints that do not extend each other": (
        lambda root: _rewind(root),
        {"inconsistent-checkpoints"},
    ),
    "an unlisted file": (lambda root: _unlisted(root), {"uncovered-file"}),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_each_kind_of_tampering_is_found_and_named(
    exported: tuple[Path, list[VerifierKey]], tmp_path: Path, mutation: str
) -> None:
    source, keys = exported
    root = _copy(source, tmp_path)
    mutate, expected = MUTATIONS[mutation]
    mutate(root)
    report = verify(root, keys)
    assert not report.ok
    assert expected <= finding_kinds(report), report.findings
    named = [f for f in report.findings if f.kind in expected]
    assert all(f.node and (f.key or f.first_seq) for f in named if f.kind != "uncovered-file")


def test_a_checkpoint_by_an_untrusted_key(exported: tuple[Path, list[VerifierKey]]) -> None:
    root, _ = exported
    report = verify(root, [SigningKey.generate("someone/else").verifier])
    assert "untrusted-checkpoint" in finding_kinds(report)
    assert not report.ok


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditline.client.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_command_line_exit_codes_and_json(
    exported: tuple[Path, list[VerifierKey]], tmp_path: Path
) -> None:
    root, keys = exported
    key_file = tmp_path / "keys.pub"
    key_file.write_text("".join(k.text + "\n" for k in keys))
    good = _cli("verify", str(root), "--public-key", str(key_file), "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout)["ok"] is True
    earlier = tmp_path / "earlier.json"
    earlier.write_text(good.stdout)
    again = _cli("verify", str(root), "--public-key", str(key_file), "--expect", str(earlier))
    assert again.returncode == 0, again.stdout + again.stderr
    earlier.write_text("[]")
    again = _cli("verify", str(root), "--public-key", str(key_file), "--expect", str(earlier))
    assert again.returncode == 2
    assert "not the JSON report" in again.stderr
    copy = _copy(root, tmp_path)
    _largest(copy).unlink()
    bad = _cli("verify", str(copy), "--public-key", str(key_file))
    assert bad.returncode == 1
    assert "NOT PROVEN deleted-file" in bad.stdout
    usage = _cli("verify", str(tmp_path / "nowhere"), "--public-key", str(key_file))
    assert usage.returncode == 2
    # A window no manifest falls in proves nothing (it was "verified: 0 events").
    later = _cli("verify", str(root), "--public-key", str(key_file), "--since", "2999-01-01")
    assert later.returncode == 1, later.stdout
    assert "nothing is proven" in later.stdout


def test_a_proof_of_one_event_verifies_offline_and_only_as_given(
    exported: tuple[Path, list[VerifierKey]], tmp_path: Path
) -> None:
    root, keys = exported
    line = gzip.decompress(_largest(root).read_bytes()).splitlines()[3]
    event_id = json.loads(line)["ApiEvent"]["EventId"]
    proof = prove(LocalDirectory(root), event_id, keys)
    assert verify_proof(proof, keys)["EventId"] == event_id
    changed = dict(proof, line=proof["line"].replace('"Version":"2"', '"Version":"3"'))
    with pytest.raises(ValueError, match="root"):
        verify_proof(changed, keys)
    with pytest.raises(ValueError, match="trusted"):
        verify_proof(proof, [SigningKey.generate(keys[0].name).verifier])
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof))
    key_file = tmp_path / "keys.pub"
    key_file.write_text(keys[0].text + "\n")
    assert _cli("verify-proof", str(path), "--public-key", str(key_file)).returncode == 0
    path.write_text(json.dumps(changed))
    assert _cli("verify-proof", str(path), "--public-key", str(key_file)).returncode == 1
    # Not a proof's shape: refused, not a traceback (found by a helper).
    hostiles: list[object] = [[], {**proof, "line": 5}, {**proof, "checkpoint": None}]
    for hostile in hostiles:
        path.write_text(json.dumps(hostile))
        result = _cli("verify-proof", str(path), "--public-key", str(key_file))
        assert (result.returncode, result.stderr) == (1, ""), result.stderr
