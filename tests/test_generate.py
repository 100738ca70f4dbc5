"""`sam3spec generate`: deterministic, literal-only scripts; `--check` catches drift."""

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = "x'); import os; os.system('touch /tmp/sam3spec-pwned') #\n\"\"\"{{ 7 * 7 }}"


def sam3spec(*args, cwd):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "sam3spec", *args], cwd=cwd, capture_output=True, text=True,
                          env=env)


def project_copy(tmp_path: Path) -> Path:
    for name in ("manifests", "templates", "generated"):
        shutil.copytree(ROOT / name, tmp_path / name)
    return tmp_path


def snapshot(path: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_check_passes_on_the_checked_in_tree():
    result = sam3spec("generate", "--check", cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_check_fails_after_a_template_edit_and_generate_is_idempotent(tmp_path):
    root = project_copy(tmp_path)
    template = root / "templates" / "verify.py.j2"
    template.write_text(template.read_text().replace("against PyTorch's", "against the"))
    result = sam3spec("generate", "--check", cwd=root)
    assert result.returncode == 1
    stale = [line for line in result.stderr.splitlines() if line.startswith("out of date: ")]
    assert stale and all("/verify_" in line for line in stale)
    assert len(stale) == len(list((root / "generated").rglob("verify_*.py")))
    assert sam3spec("generate", cwd=root).returncode == 0
    first = snapshot(root / "generated")
    assert sam3spec("generate", cwd=root).returncode == 0
    assert snapshot(root / "generated") == first  # byte-identical on re-run
    assert sam3spec("generate", "--check", cwd=root).returncode == 0


def test_stale_files_are_reported_and_removed(tmp_path):
    root = project_copy(tmp_path)
    extra = root / "generated" / "sam3-image" / "vit_trunk" / "compile_tpu.py"
    extra.write_text("# left over\n")
    result = sam3spec("generate", "--check", cwd=root)
    assert result.returncode == 1 and "compile_tpu.py" in result.stderr
    sam3spec("generate", cwd=root)
    assert not extra.exists()


def test_manifest_strings_are_rendered_as_literals_never_as_code(tmp_path):
    root = project_copy(tmp_path)
    text = (ROOT / "tests" / "data" / "minimal.yaml").read_text()
    text = text.replace('reason: "a reason"', f"reason: {json.dumps(PAYLOAD)}")
    text = text.replace("num-cores: 2}", f"num-cores: 2, mcpu: {json.dumps(PAYLOAD)}}}")
    manifest = root / "manifests" / "evil.yaml"
    manifest.write_text(text)
    result = sam3spec("generate", "manifests/evil.yaml", cwd=root)
    assert result.returncode == 0, result.stderr
    scripts = list((root / "generated" / "minimal").rglob("*.py"))
    assert scripts
    found = 0
    for script in scripts:
        tree = ast.parse(script.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert "os" not in names
        constants = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        found += sum(PAYLOAD in c for c in constants)
        assert "7 * 7" in script.read_text() or PAYLOAD not in "".join(constants)  # not evaluated by Jinja
    assert found >= 2  # the reason (model.py) and the target (compile/verify scripts), as plain strings
    assert not Path("/tmp/sam3spec-pwned").exists()
