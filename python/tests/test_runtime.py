"""The library, the runtime's host-side services, and loading bundles (no GPU needed)."""

import ctypes.util
import json
import re
import shutil
import subprocess

import pytest

import attune
from conftest import COPY_BUNDLE, EXAMPLES, PYTHON_DIR, REPO, run_python


def test_import_does_not_load_the_library_and_a_bad_path_is_reported():
    bad = "/nonexistent/libattune_runtime.so"
    r = run_python(
        "import attune\n"
        "try:\n"
        "    attune.version()\n"
        "except attune.AttuneError as e:\n"
        "    print('AttuneError:', e)\n",
        env={"ATTUNE_RUNTIME_LIB": bad},
    )
    assert r.returncode == 0, r.stderr
    assert "AttuneError: attune: cannot load the runtime library " + bad in r.stdout


def test_runtime_lib_env_selects_the_library(tmp_path):
    copy = tmp_path / "libattune_runtime.so"
    shutil.copyfile(attune.library_path(), copy)
    r = run_python(
        "import attune\n"
        "print(attune.library_path())\n"
        "print(attune.version())\n"
        "print(any(line.rstrip().endswith(attune.library_path())"
        " for line in open('/proc/self/maps')))\n",
        env={"ATTUNE_RUNTIME_LIB": str(copy)},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(copy), attune.version(), "True"]


def test_a_missing_library_lists_where_it_looked(tmp_path):
    if ctypes.util.find_library("attune_runtime"):
        pytest.skip("a libattune_runtime is installed on the system library path")
    # A copy of the package in a tree laid out like the repository, without builds.
    shutil.copytree(PYTHON_DIR / "attune", tmp_path / "python" / "attune")
    r = run_python(
        "import attune\n"
        "try:\n"
        "    attune.cache_root()\n"
        "except attune.AttuneError as e:\n"
        "    print(e)\n",
        env={"ATTUNE_RUNTIME_LIB": None, "PYTHONPATH": str(tmp_path / "python")},
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "libattune_runtime.so was not found" in r.stdout
    for place in (
        "$ATTUNE_RUNTIME_LIB (not set)",
        str(tmp_path / "python" / "attune" / "libattune_runtime.so"),
        str(tmp_path / "build" / "runtime" / "libattune_runtime.so"),
        str(tmp_path / "build-rt" / "runtime" / "libattune_runtime.so"),
        "find_library",
        "-DATTUNE_RUNTIME_ONLY=ON",
    ):
        assert place in r.stdout


def test_version_is_the_project_version():
    cmake = (REPO / "CMakeLists.txt").read_text()
    project = re.search(r"project\(attune\b[^)]*\bVERSION\s+([0-9.]+)", cmake).group(1)
    assert attune.version() == project


@pytest.mark.parametrize("name", ["causal", "document", "mistral-swa", "expr-score", "rope-yarn"])
def test_spec_hash_equals_the_command_line(name, hash_cli):
    path = EXAMPLES / f"{name}.json"
    printed = subprocess.run(hash_cli + [str(path)], capture_output=True, text=True, check=True)
    assert attune.spec_hash(path) == printed.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", attune.spec_hash(str(path)))


def test_spec_hash_of_a_dict_is_the_hash_of_its_file():
    path = EXAMPLES / "document.json"
    spec = json.loads(path.read_text())
    assert attune.spec_hash(spec) == attune.spec_hash(path)
    # Key order and layout are not part of the spec.
    reordered = dict(reversed(list(spec.items())))
    assert attune.spec_hash(reordered) == attune.spec_hash(path)
    assert attune.spec_hash(dict(spec, heads_q=16)) != attune.spec_hash(path)


@pytest.mark.parametrize(
    "text, message",
    [('{"a": 1,}', "expected a string key"), ('{"a": 1, "a": 2}', 'duplicate key "a"')],
)
def test_spec_hash_refuses_what_the_compiler_refuses(tmp_path, text, message):
    path = tmp_path / "spec.json"
    path.write_text(text)
    with pytest.raises(attune.AttuneError) as e:
        attune.spec_hash(path)
    assert str(e.value).startswith(f"attune: {path} is not a JSON spec: attn_spec_hash: line 1")
    assert message in str(e.value)
    with pytest.raises(attune.AttuneError, match="not a JSON spec"):
        attune.compile(path)


def test_spec_hash_of_a_missing_file():
    with pytest.raises(attune.AttuneError, match="cannot read the spec /nonexistent.json"):
        attune.spec_hash("/nonexistent.json")


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTUNE_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert attune.cache_root() == str(tmp_path / "explicit")
    monkeypatch.delenv("ATTUNE_CACHE_DIR")
    assert attune.cache_root() == str(tmp_path / "xdg" / "attune")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert attune.cache_root() == str(tmp_path / "home" / ".cache" / "attune")


def test_load_the_copy_bundle(copy_kernel):
    import torch

    k = copy_kernel
    assert k.variants == (
        "copy_sm80_a",
        "copy_sm80_b",
        "copy_sm90a",
        "copy_huge_smem",
        "copy_bad_kernel",
        "copy_big_smem",
    )
    assert (k.dtype, k.heads_q, k.heads_kv, k.head_dim, k.head_dim_v) == (
        torch.bfloat16,
        4,
        2,
        64,
        64,
    )
    assert k.input_names == ("doc",)
    assert k.info["spec_name"] == "copy-test"
    assert k.info["dir"] == str(COPY_BUNDLE)
    assert k.info["outputs"] == ["o", "lse"]
    assert k.info["inputs"] == [{"name": "doc", "dtype": "i32", "shape": ["B", "Sq"]}]
    assert [v["name"] for v in k.info["variants"]] == list(k.variants)
    assert "copy-test" in repr(k) and "6 variants" in repr(k)


def test_compile_of_a_bundle_directory_loads_it(copy_kernel):
    assert attune.compile(COPY_BUNDLE).info == copy_kernel.info
    assert attune.compile(str(COPY_BUNDLE)).variants == copy_kernel.variants


def test_load_of_a_directory_without_manifest(tmp_path):
    with pytest.raises(attune.AttuneError) as e:
        attune.load(tmp_path)
    assert str(e.value).startswith("attn_bundle_load: ")
    assert str(tmp_path / "manifest.json") in str(e.value)
    assert "kernel bundle directory" in str(e.value)


def test_load_of_a_broken_manifest_names_the_problem(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(COPY_BUNDLE, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format"] = "attune-bundle/99"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(attune.AttuneError, match=r"/format.*attune-bundle/99"):
        attune.load(bundle)


def test_kernels_free_their_bundles():
    for _ in range(50):
        k = attune.load(COPY_BUNDLE)
        del k
    assert attune.load(COPY_BUNDLE).variants


def test_device_info_without_a_driver():
    # The driver is loaded once per process: a fresh one sees ATTUNE_LIBCUDA.
    r = run_python(
        "import attune\n"
        "try:\n"
        "    attune.device_info()\n"
        "except attune.AttuneError as e:\n"
        "    print('AttuneError:', e)\n",
        env={"ATTUNE_LIBCUDA": "/nonexistent/libcuda.so.1"},
    )
    assert r.returncode == 0, r.stderr
    assert "AttuneError: attn_device_info: no CUDA driver:" in r.stdout
    assert "libcuda.so.1 could not be loaded" in r.stdout
