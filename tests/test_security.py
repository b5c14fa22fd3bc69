"""Untrusted files: no pickle anywhere, remote code that only defines things, no token leaks.

- Static policy over every Python file of the project: no pickle-family imports, no `torch.load`
  without `weights_only=True`, no `numpy.load(..., allow_pickle=True)`, no `torch.save`.
- Saved model directories (every family's `save_pretrained`, and `train.py`'s output) hold
  safetensors weights and no pickle; only Trainer's `checkpoint-*/` resume state is pickled.
- The remote-code files (`modeling/*.py`, copied next to the weights by `save_pretrained`) are
  imported in a fresh interpreter under an audit hook: no network, process or file-write call, no
  change of global state, and at module level only definitions and imports of torch,
  transformers, numpy or the standard library.
- `train.py` run with a Hub token (environment and `--hub_token`) writes and logs it nowhere, and
  no project code prints, logs or writes a token-named variable.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import soundfile as sf
import torch
from conftest import ROOT, label_kwargs, speech_like, tiny_backbone_config

from modeling import MODEL_CLASSES, EmotionFeatureExtractor

PROJECT_DIRS = ("modeling", "scripts", "tests", "spaces", "benchmarks", "docs")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
# (path relative to the repository, rule) -> why it is acceptable. Keep this short and explained.
ALLOWED: dict[tuple[str, str], str] = {
    (
        "tests/test_security.py",
        "torch.save",
    ): "writes pickles to prove that the pickle-file detector finds them",
}


def project_python_files() -> list[Path]:
    files = [p for d in PROJECT_DIRS for p in (ROOT / d).rglob("*.py") if ".venv" not in p.parts]
    return sorted(files + list(ROOT.glob("*.py")))


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def pickle_violations(source: str) -> list[tuple[int, str]]:
    """(line, rule) for every use of a pickle-based loader or saver in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, "import") for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            found.append((node.lineno, "import"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, owner = node.func.attr, ast.unparse(node.func.value)
            if name == "load" and owner == "torch" and not _is_true(_keyword(node, "weights_only")):
                found.append((node.lineno, "torch.load without weights_only=True"))
            elif name == "save" and owner == "torch":
                found.append((node.lineno, "torch.save"))
            elif name == "load" and owner in ("np", "numpy") and _is_true(_keyword(node, "allow_pickle")):
                found.append((node.lineno, "numpy.load(allow_pickle=True)"))
            elif name in ("read_pickle", "to_pickle"):
                found.append((node.lineno, name))
    return found


def test_policy_checker_catches_each_pattern():
    source = """
import pickle
from joblib import load
import dill as d
torch.load(path)
torch.load(path, weights_only=False)
torch.load(path, weights_only=True)
torch.save(model, path)
np.load(path, allow_pickle=True)
np.load(path)
frame.to_pickle(path)
"""
    rules = [rule for _, rule in pickle_violations(source)]
    assert rules == [
        "import",
        "import",
        "import",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "torch.save",
        "numpy.load(allow_pickle=True)",
        "to_pickle",
    ]


def test_no_pickle_anywhere_in_the_project():
    files = project_python_files()
    assert len(files) > 20
    problems = []
    for path in files:
        relative = str(path.relative_to(ROOT))
        for line, rule in pickle_violations(path.read_text(encoding="utf-8")):
            if (relative, rule) not in ALLOWED:
                problems.append(f"{relative}:{line}: {rule}")
    assert not problems, "pickle-based loading/saving (add to ALLOWED only with a reason):\n" + "\n".join(
        problems
    )


def pickle_files(directory: Path, skip_checkpoints: bool = True) -> list[str]:
    """Files under `directory` in a pickle format (raw pickle, or torch's zip with data.pkl)."""
    found = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory)
        if skip_checkpoints and relative.parts[0].startswith("checkpoint-"):
            continue
        head = path.read_bytes()[:2]
        is_pickle = len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5
        if head == b"PK" and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                is_pickle = any(name.endswith(".pkl") for name in archive.namelist())
        if is_pickle or path.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"):
            found.append(str(relative))
    return found


def test_pickle_file_detector(tmp_path):
    torch.save({"x": torch.zeros(2)}, tmp_path / "weights.data")  # a misleading name does not hide it
    (tmp_path / "ok.json").write_text("{}")
    (tmp_path / "checkpoint-2").mkdir()
    torch.save({}, tmp_path / "checkpoint-2" / "optimizer.pt")
    assert pickle_files(tmp_path) == ["weights.data"]
    assert pickle_files(tmp_path, skip_checkpoints=False) == ["checkpoint-2/optimizer.pt", "weights.data"]


def tiny_model_kwargs(model_type: str) -> dict:
    from test_train import TINY_DECOMPOSITION, TINY_SPECTROGRAM

    if model_type in TINY_SPECTROGRAM:
        return dict(TINY_SPECTROGRAM[model_type])
    if model_type in ("speech_decomposition", "emotion_decomposed"):
        extra = {"backbone_config": tiny_backbone_config()} if model_type == "emotion_decomposed" else {}
        return {**TINY_DECOMPOSITION, **extra}
    return {"backbone_config": tiny_backbone_config()}


@pytest.mark.parametrize("model_type", sorted(MODEL_CLASSES))
def test_every_family_saves_safetensors_and_no_pickle(model_type, tmp_path):
    config_class, model_class = MODEL_CLASSES[model_type]
    config = config_class(**tiny_model_kwargs(model_type), **label_kwargs())
    model_class(config).save_pretrained(tmp_path)
    EmotionFeatureExtractor(**config.feature_extractor_kwargs()).save_pretrained(tmp_path)
    weights = [p.name for p in tmp_path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth")]
    assert weights == ["model.safetensors"]
    assert pickle_files(tmp_path) == []
    assert {p.name for p in tmp_path.glob("*.py")}, "save_pretrained copies the remote code"


# ----------------------------------------------------------------------------------------------
# Remote code: import in a sandbox
# ----------------------------------------------------------------------------------------------

REMOTE_CODE = sorted(p for p in (ROOT / "modeling").glob("*.py") if p.name != "__init__.py")
ALLOWED_IMPORT_ROOTS = {"torch", "transformers", "numpy"} | set(sys.stdlib_module_names)


def module_level_problems(source: str) -> list[str]:
    """Statements at module level other than definitions, constants and allowed imports.
    Imports inside `try: ... except ImportError` are optional dependencies and allowed."""
    tree = ast.parse(source)
    problems = []

    def check_import(node) -> None:
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            return
        names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        for name in names:
            if name.split(".")[0] not in ALLOWED_IMPORT_ROOTS:
                problems.append(f"line {node.lineno}: module-level import of {name}")

    def constant(node) -> bool:
        if isinstance(node, (ast.Constant, ast.Name, ast.Attribute)):
            return True
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return constant(node.operand)  # a negative number
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return all(constant(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            return all(constant(k) and constant(v) for k, v in zip(node.keys, node.values) if k is not None)
        if isinstance(node, ast.Call):  # a logger or a compiled pattern, nothing else
            return ast.unparse(node.func) in ("logging.getLogger", "re.compile", "TypeVar")
        return False

    for index, node in enumerate(tree.body):
        if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            check_import(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or (
            isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and constant(node.value)
        ):
            continue
        elif isinstance(node, ast.Try):
            handlers = [ast.unparse(h.type) if h.type else "" for h in node.handlers]
            body = node.body + [s for h in node.handlers for s in h.body]
            if not all(h in ("ImportError", "ModuleNotFoundError") for h in handlers) or not all(
                isinstance(s, (ast.Import, ast.ImportFrom, ast.Assign, ast.Pass)) for s in body
            ):
                problems.append(f"line {node.lineno}: try block other than an optional import")
        else:
            problems.append(f"line {node.lineno}: {ast.unparse(node)[:80]!r} runs at import")
    return problems


def test_remote_code_module_level_is_definitions_only():
    assert len(REMOTE_CODE) >= 8
    problems = {p.name: module_level_problems(p.read_text()) for p in REMOTE_CODE}
    assert not any(problems.values()), problems
    bad = "import os\nimport requests\nprint('hi')\nx = open('f')\ntry:\n    import pyworld\nexcept ImportError:\n    pass\n"
    assert len(module_level_problems(bad)) == 3  # requests, print and open; the optional import is fine
    assert module_level_problems("LIMITS = {'floor_db': -60.0, 'range': (-1, +1)}\n") == []
    assert len(module_level_problems("LIMIT = -len('abc')\n")) == 1  # a call, not a number


SANDBOX = r"""
import importlib, json, logging, os, random, sys, threading, warnings
sys.dont_write_bytecode = True
import numpy, torch, transformers  # the dependencies remote code may use, loaded before the hook
from transformers.models.auto import configuration_auto, modeling_auto

dependencies, packages = json.loads(sys.argv[1]), json.loads(sys.argv[2])  # {package dir: [modules]}
for module, attributes in dependencies.items():  # torch/transformers modules the files import
    loaded = importlib.import_module(module)
    for attribute in attributes:
        getattr(loaded, attribute, None)  # transformers loads its submodules lazily
BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
           "os.kill", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.symlink",
           "os.link", "os.truncate", "os.utime", "shutil.", "urllib.", "http.client.", "ftplib.",
           "smtplib.", "webbrowser.", "ctypes.dlopen", "pty.spawn", "sqlite3.connect")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
events = []

def hook(event, args):
    if event.startswith(BLOCKED):
        events.append(f"{event} {str(args)[:120]}")
    elif event == "open":
        path, mode, flags = (list(args) + [None, None])[:3]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE_FLAGS:
            events.append(f"open for writing {path}")

def snapshot():
    return {
        "torch_rng": torch.random.get_rng_state().tolist()[:64],
        "numpy_rng": str(numpy.random.get_state()[1][:8].tolist()),
        "python_rng": random.getstate()[1][:8],
        "default_dtype": str(torch.get_default_dtype()),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "grad_enabled": torch.is_grad_enabled(),
        "environ": dict(os.environ),
        "sys.path": list(sys.path),
        "warnings": [str(f) for f in warnings.filters],
        "root_logger": [repr(h) for h in logging.getLogger().handlers] + [logging.getLogger().level],
        "auto_configs": sorted(configuration_auto.CONFIG_MAPPING._extra_content),
        "auto_models": len(modeling_auto.MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING._extra_content),
        "threads_alive": threading.active_count(),
        "meta_path": [repr(f) for f in sys.meta_path],
    }

before_modules = set(sys.modules)
for package in packages:
    sys.path.insert(0, os.path.dirname(package))
    importlib.import_module(os.path.basename(package))
sys.addaudithook(hook)
report, new_roots = {}, None
for package, names in packages.items():  # the package under test first: a probe changes state
    for name in names:
        before = snapshot()
        importlib.import_module(f"{os.path.basename(package)}.{name}")
        after = snapshot()
        report[name] = {"events": list(events), "changed": [k for k in before if before[k] != after[k]]}
        events.clear()
    if new_roots is None:  # top-level modules that the first package's import brought in
        new_roots = sorted({m.split(".")[0] for m in set(sys.modules) - before_modules})
print(json.dumps({"modules": report, "new_roots": new_roots}))
"""


def third_party_imports(paths: list[Path]) -> dict[str, list[str]]:
    """Absolute module -> imported names, for the torch/transformers/numpy imports of `paths`: the
    sandbox loads them before its hook, so that it judges our code, not theirs."""
    modules: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.setdefault(node.module, set()).update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    modules.setdefault(alias.name, set())
    allowed = ("torch", "transformers", "numpy")
    return {m: sorted(names) for m, names in modules.items() if m.split(".")[0] in allowed}


def run_sandbox(packages: dict[Path, list[str]], workdir: Path) -> dict:
    """Import each package's modules, in order, in a fresh interpreter under the audit hook."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    dependencies = third_party_imports([p for package in packages for p in sorted(package.glob("*.py"))])
    spec = {str(package): names for package, names in packages.items()}
    done = subprocess.run(
        [sys.executable, "-c", SANDBOX, json.dumps(dependencies), json.dumps(spec)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_remote_code_imports_in_a_sandbox_without_side_effects(tmp_path):
    package = tmp_path / "remote_emotion_code"  # as transformers does: a package of copied files
    package.mkdir()
    (package / "__init__.py").write_text("")
    for path in REMOTE_CODE:
        shutil.copy(path, package / path.name)
    # A probe imported after them shows that the hook sees what it must refuse.
    probe = tmp_path / "probe_code"
    probe.mkdir()
    (probe / "__init__.py").write_text("")
    (probe / "bad.py").write_text(
        "import os, socket, subprocess\nopen('written.txt', 'w').close()\n"
        "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=0.1)\nexcept OSError:\n    pass\n"
        "subprocess.run(['true'])\nos.environ['X'] = '1'\n"
    )
    names = [p.stem for p in REMOTE_CODE]
    report = run_sandbox({package: names, probe: ["bad"]}, tmp_path)
    modules = report["modules"]
    assert set(modules) == {*names, "bad"}
    for name in names:
        assert modules[name]["events"] == [], (name, modules[name]["events"])
        assert modules[name]["changed"] == [], (name, modules[name]["changed"])
    optional = {"pyworld", "librosa", "soundfile", "torchaudio", "datasets", "sklearn", "scipy", "gradio"}
    assert not optional & set(report["new_roots"]), report["new_roots"]  # after the remote code only
    assert "modeling" not in report["new_roots"]  # the copies, not the repository's package

    bad = modules["bad"]
    assert any(e.startswith("open for writing") for e in bad["events"])
    assert any(e.startswith("socket.connect") for e in bad["events"])
    assert any(e.startswith("subprocess.Popen") for e in bad["events"])
    assert "environ" in bad["changed"]


# ----------------------------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------------------------

TOKEN_NAME = re.compile(r"(^|_)(hub_|hf_|auth_|access_)?token$", re.IGNORECASE)
OUTPUT_CALLS = {"print", "debug", "info", "warning", "warn", "error", "exception", "critical", "log", "write"}


def token_outputs(source: str) -> list[str]:
    """Calls that print, log or write an expression involving a variable named like a token."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in OUTPUT_CALLS:
            continue
        for argument in [*node.args, *(k.value for k in node.keywords)]:
            for sub in ast.walk(argument):
                identifier = sub.id if isinstance(sub, ast.Name) else getattr(sub, "attr", None)
                if (
                    identifier
                    and TOKEN_NAME.search(identifier)
                    and identifier not in ("pad_token", "unk_token")
                ):
                    found.append(f"line {node.lineno}: {ast.unparse(node)[:100]}")
    return found


def test_no_code_prints_or_logs_a_token():
    assert (
        len(token_outputs("print(token)\nlogger.info('%s', args.hub_token)\nf.write(f'{hf_token}')\n")) == 3
    )
    assert token_outputs("print(tokenizer.pad_token)\nlogger.info('no token: set HF_TOKEN')\n") == []
    problems = {}
    for path in project_python_files():
        if "tests" not in path.relative_to(ROOT).parts:
            problems[str(path.relative_to(ROOT))] = token_outputs(path.read_text(encoding="utf-8"))
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}


ENV_TOKEN = "hf_EnvTokenMustNotLeak0123456789"
ARG_TOKEN = "hf_ArgTokenMustNotLeak9876543210"


def test_train_writes_and_logs_no_hub_token(tmp_path, monkeypatch, caplog, capfd):
    import train

    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    lines = ["file_name,emotion,speaker,gender"]
    for i in range(12):
        sf.write(corpus / "audio" / f"{i}.wav", speech_like(0.4, seed=i), 16000)
        lines.append(
            f"audio/{i}.wav,{('neutral', 'angry')[i % 2]},s{i // 3},{('male', 'female')[i // 3 % 2]}"
        )
    (corpus / "metadata.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    out = tmp_path / "out"
    args = [
        "--data_dir", str(corpus),
        "--model_type", "emotion_ssl",
        "--backbone_config", json.dumps(tiny_backbone_config()),
        "--speaker_column", "speaker",
        "--gender_column", "gender",
        "--output_dir", str(out),
        "--cache_dir", str(tmp_path / "cache"),
        "--max_steps", "2",
        "--save_strategy", "steps",
        "--save_steps", "1",
        "--eval_strategy", "steps",
        "--eval_steps", "1",
        "--report_to", "tensorboard",
        "--logging_steps", "1",
        "--log_level", "info",
        "--hub_token", ARG_TOKEN,
    ]  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        train.main(args)
    captured = capfd.readouterr()
    assert (out / "results.json").exists()
    assert list(out.rglob("events.out.tfevents.*"))  # TensorBoard wrote its logs (and no token)
    for token in (ENV_TOKEN, ARG_TOKEN):
        assert token not in caplog.text
        assert token not in captured.out + captured.err
        leaks = [
            str(p.relative_to(tmp_path))
            for p in tmp_path.rglob("*")
            if p.is_file() and token.encode() in p.read_bytes()
        ]
        assert leaks == [], f"the token was written to {leaks}"
    assert pickle_files(out) == []  # the model directory; checkpoints keep Trainer's resume state
    assert os.environ["HF_TOKEN"] == ENV_TOKEN


def test_train_refuses_to_push_by_itself(tmp_path):
    import train

    with pytest.raises(ValueError, match=r"scripts/push_to_hub\.py"):
        train.parse_arguments(["--output_dir", str(tmp_path), "--push_to_hub", "true"])


def test_local_package_loads_saved_models_without_remote_code(tmp_path):
    """docs/security.md: with this repository's `modeling` imported, a saved model loads with
    `trust_remote_code=False`, using the local classes instead of the files next to the weights."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    import modeling

    config_class, model_class = MODEL_CLASSES["emotion_ssl"]
    config = config_class(**tiny_model_kwargs("emotion_ssl"), **label_kwargs())
    model_class(config).save_pretrained(tmp_path)
    EmotionFeatureExtractor().save_pretrained(tmp_path)
    for path in tmp_path.glob("*.py"):  # remote code that must not be the one used
        path.write_text("raise RuntimeError('remote code ran')\n")
    model = AutoModelForAudioClassification.from_pretrained(tmp_path, trust_remote_code=False)
    extractor = AutoFeatureExtractor.from_pretrained(tmp_path, trust_remote_code=False)
    assert type(model) is model_class
    assert type(extractor) is EmotionFeatureExtractor
    assert type(model).__module__.startswith(modeling.__name__ + ".")
