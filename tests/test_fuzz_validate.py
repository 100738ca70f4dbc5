"""Fuzzing `sam3spec validate`: seeded random mutations of the shipped manifests must each end in exit 0, or exit 2
with only `FILE:LINE:COL: key.path: message` lines on stderr, never a traceback, within TIME_LIMIT seconds.

SAM3SPEC_FUZZ_CASES (default 300) sets the number of cases, SAM3SPEC_FUZZ_SEED (default 0) the seed; case i uses
random.Random(f"{seed}:{i}"), so a failure names the case to replay. `pytest -s` prints the counts by outcome and
the slowest case.
"""

import collections
import contextlib
import io
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sam3spec import cli

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<path>.+?): (?P<msg>.+)$")  # test_validate's
CASES = int(os.environ.get("SAM3SPEC_FUZZ_CASES", "300"))
SEED = int(os.environ.get("SAM3SPEC_FUZZ_SEED", "0"))
SUBPROCESS_CASES = 5          # cases also run through a real `python -m sam3spec validate`
TIME_LIMIT = 5.0              # CPU seconds per case, in process (a 2x wall-clock alarm stops a hang)
SUBPROCESS_TIME_LIMIT = 15.0  # the same through a fresh interpreter (imports included, on a busy machine)
BASE, TINY = "sam3-image.yaml", "sam3-image-tiny.yaml"

VALUES = [
    "[]", "{}", "null", "~", "true", "no", "on", "'text'", '"x\\0y"', '"\\ud800"', "-1", "0", "1", "2.5", "-0.0",
    "0x1F", "0o17", "017", "1_000", "190:20:30", "[1, [2, [3]]]", "{a: 1}", "{a: {b: {c: [1]}}}", "2024-01-01",
    "2024-13-45", "12:30:00", "!!binary aGVsbG8=", "!!set {a, b}", "!!omap [a: 1]", "!foo bar", "!!int x",
    "!!bool maybe", "!!float abc", "!!timestamp x", "!!null x", "!!str 5", "=", "<<", "*undefined", "&dangling",
    "'unterminated", "[unclosed", "{a: [}", "é", "\u202e", "'\u2028'", "'a: b'", "- item", "? x", "|", ">-", "%",
    "@", "`", "!", "&", "*",
]
NUMBERS = [
    ".inf", "-.inf", "+.inf", ".nan", ".NaN", ".INF", "1.0e+999", "-1.0e+999", "9" * 5000, "-" + "9" * 5000,
    "1" * 101, "1" * 100, "0", "-0", "-1", str(2 ** 31 - 1), str(2 ** 31), str(2 ** 63), str(2 ** 64 - 1),
    str(2 ** 64), str(-2 ** 63 - 1), "1.5", "0.0", "1.0e-320", "0x" + "f" * 30, "1e5", "1.0e+308",
]
KEYS = ["1", "on", "null", "~", "true", "[a]", "{a: 1}", "'<key>'", '"a: b"', '"sp ace"', '"x\\ny"', '"\\t"',
        "<<", "'é'", "? [a, b]\n", "&k name", "*k", "!!int 3", "2024-01-01", "'name'", "name", "x" * 300]


def bomb(indent: str, width: int = 9, levels: int = 9) -> str:
    """A 'billion laughs': `levels` lists of `width` aliases to the one before: width ** levels values."""
    lines = [f"{indent}lol0: &lol0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels + 1):
        lines.append(f"{indent}lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


# --- mutations: each takes (rng, text) and returns text or bytes, and a short description --------------------

def m_delete_line(rng, text):
    lines = text.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    return "".join(lines[:i] + lines[i + 1:]), f"delete line {i + 1}"


def m_duplicate_line(rng, text):
    lines = text.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    return "".join(lines[:i + 1] + [lines[i]] + lines[i + 1:]), f"duplicate line {i + 1}"


def m_swap_lines(rng, text):
    lines = text.splitlines(keepends=True)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines), f"swap lines {i + 1} and {j + 1}"


def m_indent(rng, text):
    lines = text.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    change = rng.choice(["  ", "\t", ""])
    lines[i] = change + lines[i] if change else lines[i][2:] if lines[i].startswith("  ") else lines[i]
    return "".join(lines), f"indent line {i + 1} by {change!r}"


def _replace_match(rng, text, pattern, choices, what):
    matches = list(re.finditer(pattern, text, re.M))
    if not matches:
        return text, f"{what}: no match"
    m = rng.choice(matches)
    new = rng.choice(choices)
    return text[:m.start()] + new + text[m.end():], f"{what} at {m.start()}: {m[0][:30]!r} -> {new[:30]!r}"


SCALAR = r"(?<=: )[^\s,{}\[\]#&*!|>'\"][^,{}\[\]#\n]*"  # a plain value after `key: `


def m_value(rng, text):
    return _replace_match(rng, text, SCALAR, VALUES + NUMBERS, "value")


def m_number(rng, text):
    return _replace_match(rng, text, r"(?<![\w.])-?\d+(\.\d+)?([eE][-+]?\d+)?(?![\w.])", NUMBERS + ["0"] * 5, "number")


def m_key(rng, text):
    return _replace_match(rng, text, r"(?<=^  )[a-z_]+(?=:)|(?<=^)[a-z_]+(?=:)|(?<=[{,] )[a-z_]+(?=: )", KEYS, "key")


def m_flip_bytes(rng, text):
    data = bytearray(text.encode())
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data), "flip bits"


def m_insert_bytes(rng, text):
    data = bytearray(text.encode())
    junk = rng.choice([bytes([rng.randrange(256)]), b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b"\xe9", b"\xc3",
                       b"\x1b[31m", b"\r", b"\x85", "\u2028".encode(), bytes(rng.randrange(256) for _ in range(16))])
    i = rng.randrange(len(data))
    return bytes(data[:i] + junk + data[i:]), f"insert {junk[:8]!r} at byte {i}"


def m_truncate(rng, text):
    data = text.encode()
    i = rng.randrange(len(data))
    return data[:i], f"truncate at byte {i}"


def m_encoding(rng, text):
    enc = rng.choice(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252", "utf-8-sig"])
    if enc in ("latin-1", "cp1252"):
        text = text.replace("description: ", "description: caf\u00e9 ", 1)
    return text.encode(enc, "replace"), f"encode as {enc}"


def m_line_endings(rng, text):
    ending = rng.choice(["\r\n", "\r", "\x85", "\u2028"])
    return text.replace("\n", ending), f"line endings {ending!r}"


def m_alias(rng, text):
    a, b = sorted(rng.sample(list(re.finditer(SCALAR, text, re.M)), 2), key=lambda m: m.start())
    name = rng.choice(["x", "a1", "dup"])
    if rng.random() < 0.3:  # the alias before its anchor: undefined
        return text[:a.start()] + f"*{name}" + text[a.end():b.start()] + f"&{name} {b[0]}" + text[b.end():], \
            f"alias {a[0][:20]!r} before its anchor"
    return text[:a.start()] + f"&{name} {a[0]}" + text[a.end():b.start()] + f"*{name}" + text[b.end():], \
        f"alias {b[0][:20]!r} to {a[0][:20]!r}"


def m_recursive_alias(rng, text):
    return _replace_match(rng, text, SCALAR, ["&r [1, *r]", "&r {a: *r}", "&r [[[*r]]]"], "recursive alias")


def _into_builder_args(text: str, block: str) -> str:
    """`block` (lines indented 4) inside model.builder_args: free-form data, which only the limits bound."""
    if "  builder_args:\n" in text:
        return text.replace("  builder_args:\n", "  builder_args:\n" + block, 1)
    return text.replace("model:\n", "model:\n  builder_args:\n" + block, 1)  # the tiny manifest: merged into base's


def m_alias_bomb(rng, text):
    width, levels = rng.choice([(9, 9), (10, 10), (2, 40), (100, 2), (3, 5)])
    if rng.random() < 0.8:
        return _into_builder_args(text, bomb("    ", width, levels)), f"alias bomb {width}^{levels} in builder_args"
    return text + bomb("", width, levels), f"alias bomb {width}^{levels} at top level"


def m_merge_key(rng, text):
    return _into_builder_args(text, "    <<: {device: cpu}\n") + "x: &m {a: 1}\ny:\n  <<: *m\n", "merge keys"


def m_deep(rng, text):
    n = rng.choice([5, 31, 32, 33, 1000, 100000])
    closed = rng.random() < 0.5
    value = "[" * n + ("1" + "]" * n if closed else "")
    if rng.random() < 0.3:
        value = "{a: " * n + ("1" + "}" * n if closed else "")
    if rng.random() < 0.2:  # block nesting
        n = min(n, 200)
        block = "".join("    " + "  " * i + f"k{i}:\n" for i in range(n)) + "    " + "  " * n + "leaf: 1\n"
        return _into_builder_args(text, block), f"block nesting {n}"
    new, where = _replace_match(rng, text, SCALAR, [value], "deep")
    return new, f"nesting {n} {'closed' if closed else 'open'} ({where[:40]})"


def m_huge(rng, text):
    kind = rng.choice(["comment", "string", "list", "keys", "line"])
    if kind == "comment":
        return text + "# " + "x" * (600 * 1024) + "\n", "600 KiB comment"
    if kind == "string":
        return _into_builder_args(text, "    big: '" + "x" * 400_000 + "'\n"), "400 KB string"
    if kind == "list":
        return _into_builder_args(text, "    big: [" + ", ".join(["1"] * 30_000) + "]\n"), "30000-item list"
    if kind == "keys":
        return _into_builder_args(text, "".join(f"    k{i}: {i}\n" for i in range(12_000))), "12000 keys"
    return text.replace("description: ", "description: " + "y" * 200_000, 1), "200 KB line"


def m_documents(rng, text):
    return text + rng.choice(["---\na: 1\n", "...\n", "--- !!map\n", "%YAML 1.1\n---\n", "%TAG ! tag:x,2000:\n"]), \
        "documents"


def m_benign(rng, text):
    """A change that keeps a valid manifest valid."""
    lines = text.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    kind = rng.choice(["comment", "trailing", "start", "end", "alias"])
    if kind == "comment":
        lines.insert(i, rng.choice(["# é ∀ 😀\n", "   # indented\n", "\n", "#\n"]))
    elif kind == "trailing":
        lines[i] = lines[i].rstrip("\n") + "   \n"
    elif kind == "start":
        lines.insert(0, "---\n")
    elif kind == "end":
        lines.append("...\n")
    else:  # the same pipeline string written once, aliased after
        pipeline = "pipeline: sam3spec.pipelines.gpu_dlight:pipeline"
        if text.count(pipeline) > 1:
            head, _, tail = text.partition(pipeline)
            anchored = pipeline.replace(": ", ": &gpu ")
            return head + anchored + tail.replace(pipeline, "pipeline: *gpu"), "benign: aliased pipeline"
    return "".join(lines), f"benign: {kind} at line {i + 1}"


def m_extends(rng, text):
    target = rng.choice(["nope.yaml", TINY, ".", "", "''", "[a]", "{a: 1}", "/dev/null", "/dev/zero", "junk.bin",
                         "list.yaml", "utf16.yaml", "cycle_a.yaml", "fifo.yaml", "x" * 5000, '"a\\0b"', "null", "1"])
    return text.replace(f"extends: {BASE}", f"extends: {target}"), f"extends -> {target[:20]!r}"


MUTATIONS = {
    m_delete_line: 6, m_duplicate_line: 5, m_swap_lines: 4, m_indent: 3, m_value: 10, m_number: 8, m_key: 5,
    m_flip_bytes: 4, m_insert_bytes: 4, m_truncate: 2, m_encoding: 2, m_line_endings: 1, m_alias: 4,
    m_recursive_alias: 1, m_alias_bomb: 2, m_merge_key: 1, m_deep: 3, m_huge: 2, m_documents: 1, m_extends: 3,
    m_benign: 4,
}


def mutate(rng: random.Random, base: str, tiny: str) -> tuple[str, bytes, list[tuple[str, str]]]:
    """(which file, its new bytes, [(mutation, what it did)]): one to three mutations, the last one making bytes."""
    name = rng.choice([BASE, TINY])
    text, done = base if name == BASE else tiny, []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        fn = rng.choices(list(MUTATIONS), weights=list(MUTATIONS.values()))[0]
        if fn is m_extends and name != TINY:
            fn = m_value
        text, what = fn(rng, text)
        done.append((fn.__name__[2:], what))
        if isinstance(text, bytes):
            break
    return name, text if isinstance(text, bytes) else text.encode(), done


# --- running ------------------------------------------------------------------------------------------------

class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout(f"validation ran past {2 * TIME_LIMIT} s")


def validate_in_process(paths: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(["validate", *paths])
        except SystemExit as exc:  # argparse
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


def validate_subprocess(paths: list[str], cwd: Path) -> tuple[int, str, str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "sam3spec", "validate", *paths], cwd=cwd, capture_output=True,
                            text=True, env=env, timeout=3 * SUBPROCESS_TIME_LIMIT)
    return result.returncode, result.stdout, result.stderr


def check(rc: int, out: str, err: str, case: str) -> None:
    assert rc in (0, 2), f"{case}: exit {rc}\n{err[-2000:]}"
    assert "Traceback" not in out + err, f"{case}: traceback\n{err[-4000:]}"
    if rc == 0:
        assert err == "" and "valid" in out, f"{case}: exit 0 with stderr {err[:500]!r}"
        return
    lines = err.splitlines()
    assert lines, f"{case}: exit 2 and no error"
    for line in lines:
        m = LINE.match(line)
        assert m, f"{case}: not a located line: {line[:300]!r}"
        assert int(m["line"]) >= 1 and int(m["col"]) >= 1, f"{case}: {line[:300]}"
        assert os.path.exists(m["file"]), f"{case}: located in a file that does not exist: {line[:300]}"
        assert "internal error" not in m["msg"], f"{case}: {line[:500]}"


@pytest.fixture
def workdir(tmp_path):
    """Both shipped manifests and the odd files an `extends` may name."""
    for name in (BASE, TINY):
        (tmp_path / name).write_bytes((ROOT / "manifests" / name).read_bytes())
    (tmp_path / "junk.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "utf16.yaml").write_bytes("manifest_version: 1\n".encode("utf-16"))
    (tmp_path / "cycle_a.yaml").write_text("extends: cycle_b.yaml\n")
    (tmp_path / "cycle_b.yaml").write_text("extends: cycle_a.yaml\n")
    os.mkfifo(tmp_path / "fifo.yaml")  # opening it would block: it must be refused unopened
    return tmp_path


def test_fuzz_validate(workdir):
    originals = {name: (workdir / name).read_bytes() for name in (BASE, TINY)}
    base, tiny = (originals[n].decode() for n in (BASE, TINY))
    before = sorted(p.name for p in workdir.iterdir())
    outcomes, by_mutation = collections.Counter(), collections.defaultdict(collections.Counter)
    slowest = {"in process": (0.0, ""), "subprocess": (0.0, "")}
    sub_every = max(1, CASES // SUBPROCESS_CASES)
    old_handler = signal.signal(signal.SIGALRM, _alarm)
    dont_write = sys.dont_write_bytecode
    started = time.perf_counter()
    try:
        for i in range(CASES):
            rng = random.Random(f"{SEED}:{i}")
            name, data, done = mutate(rng, base, tiny)
            (workdir / name).write_bytes(data)
            both = name == BASE and rng.random() < 0.5  # the base alone, or with the manifest that extends it
            paths = [str(workdir / BASE), str(workdir / TINY)] if both else [str(workdir / name)]
            case = f"case {i} (SAM3SPEC_FUZZ_SEED={SEED}): {name}: {'; '.join(what for _, what in done)}"
            through = "subprocess" if i % sub_every == 0 else "in process"
            clock = time.perf_counter if through == "subprocess" else time.process_time  # CPU time in process
            t0 = clock()
            if through == "subprocess":
                rc, out, err = validate_subprocess(paths, workdir)
                limit = SUBPROCESS_TIME_LIMIT
            else:
                signal.setitimer(signal.ITIMER_REAL, 2 * TIME_LIMIT)
                try:
                    rc, out, err = validate_in_process(paths)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                limit = TIME_LIMIT
            elapsed = clock() - t0
            check(rc, out, err, case)
            assert elapsed < limit, f"{case}: {elapsed:.2f} s ({through})"
            outcomes[rc] += 1
            for kind, _ in done:
                by_mutation[kind][rc] += 1
            if elapsed > slowest[through][0]:
                slowest[through] = (elapsed, case)
            (workdir / name).write_bytes(originals[name])
    finally:
        signal.signal(signal.SIGALRM, old_handler)
        sys.dont_write_bytecode = dont_write
    total = time.perf_counter() - started
    assert sorted(p.name for p in workdir.iterdir()) == before  # validation wrote nothing
    assert outcomes[0] + outcomes[2] == CASES
    print(f"\nfuzz validate: {CASES} cases, seed {SEED}, {total:.1f} s: exit 0: {outcomes[0]}, exit 2: {outcomes[2]}; "
          f"{len(range(0, CASES, sub_every))} through a subprocess")
    for through, (seconds, case) in slowest.items():
        print(f"fuzz validate: slowest {through}: {seconds:.3f} s: {case[:200]}")
    print("fuzz validate: by mutation (exit 0 / exit 2): " +
          ", ".join(f"{k} {c[0]}/{c[2]}" for k, c in sorted(by_mutation.items())))
