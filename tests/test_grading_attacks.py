"""Attacks on the machine that grades: each one a notebook tried, each one must fail.

The grader runs as root here and in CI, as in a grading container. Every notebook is a lesson-01
submission whose ``cosine_beta_schedule`` is right; ``forward_diffusion`` carries the attack
and raises with what the attack found (``evidence``), so that the evidence comes back in the
grade's own output, escaped. Each test asserts that the host is untouched, that the evidence
shows the attack failing, and that the honest exercise beside it kept its point.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import psutil
import pytest

from course.grading import grade_notebook
from course.grading.fence import NOBODY, Cgroup, is_root
from course.grading.sandbox import Limits, sandbox_problem
from tests.test_grading import COSINE, FORWARD, _notebook, _output, _scores, _stray_processes

pytestmark = pytest.mark.notebook


@pytest.fixture(autouse=True)
def _needs_the_sandbox():
    problem = sandbox_problem()
    if problem is not None:
        if os.environ.get("COURSE_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"COURSE_REQUIRE_SANDBOX=1 but {problem}")
        pytest.skip(problem)


def _evidence_cell(body: str) -> str:
    """A cell that runs ``body`` (which fills the list ``found``) and defines a
    forward_diffusion that raises with it."""
    return ("import os, glob, sys, time, subprocess\nfound = []\n" + body +
            "\ndef forward_diffusion(x0, t, betas, noise=None):\n"
            "    raise ValueError('evidence ' + ' | '.join(map(str, found)))\n")


def _evidence(grade) -> str:
    output = _output(grade, "forward_diffusion")
    match = re.search(r"evidence (.*)", output)
    assert match, output
    return match[1]


def _cli(paths, results, timeout=600, env=None):
    return subprocess.run([sys.executable, "-m", "course", "grade", *map(str, paths),
                           "--json", str(results)], capture_output=True, text=True,
                          timeout=timeout, env=env)


# --------------------------------------------------------------------------------------------
# Harming the grading machine
# --------------------------------------------------------------------------------------------


def test_links_and_fifos_in_the_exchange_fail_and_the_next_notebook_is_safe(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    attack = _evidence_cell(
        f"victim = {str(victim)!r}\n"
        "for folder in glob.glob('/tmp/course-sandbox-*/*'):\n"
        "    for name in ('forward_diffusion-0.json', 'forward_diffusion-1.json'):\n"
        "        target = os.path.join(folder, name)\n"
        "        for kind, make in (('link', lambda: os.symlink(victim, target)),\n"
        "                           ('fifo', lambda: os.mkfifo(target + '.fifo'))):\n"
        "            try:\n"
        "                make(); found.append(f'{kind} made in {folder}')\n"
        "            except OSError as error:\n"
        "                found.append(f'{kind} refused {error.errno}')\n"
        "try:\n"
        "    open(victim, 'w').write('overwritten'); found.append('victim written')\n"
        "except OSError as error:\n"
        "    found.append(f'victim unreachable {error.errno}')\n")
    first = _notebook(tmp_path, COSINE, attack, name="01_attack.ipynb")
    second = _notebook(tmp_path, COSINE, FORWARD, name="01_honest.ipynb")
    results = tmp_path / "results.json"
    _cli([first, second], results)
    data = json.loads(results.read_text())
    scores = {t["name"].rsplit("/", 1)[1]: t["score"] for t in data["tests"]}
    assert scores["01_attack.ipynb: forward_diffusion"] < 2  # it raises instead of answering
    assert scores == {**scores, "01_attack.ipynb: cosine_beta_schedule": 1,
                      "01_honest.ipynb: forward_diffusion": 2,
                      "01_honest.ipynb: cosine_beta_schedule": 1}
    evidence = re.search(r"evidence (.*)", data["tests"][0]["output"])[1]
    assert "made in" not in evidence and "refused" in evidence, evidence
    assert "victim unreachable 2" in evidence  # ENOENT: the grader's folders are not there
    assert victim.read_text() == "untouched"


def test_an_answer_published_ahead_of_the_call_is_not_read(tmp_path):
    # A forged answer, in the grader's own format, sent before the call; the stub then raises.
    forge = ("from IPython.display import publish_display_data\n"
             "from course.grading.kernel_side import ANSWER_MIME\n"
             "from course.grading.exchange import pack_value\n"
             "import torch\n"
             "publish_display_data({ANSWER_MIME: pack_value((torch.zeros(2, 3, 8, 8),) * 2,\n"
             "    {'status': 'ok', 'message': '', 'changed': []})})\n"
             "def forward_diffusion(x0, t, betas, noise=None):\n"
             "    raise NotImplementedError")
    grade = grade_notebook(_notebook(tmp_path, COSINE, forge))
    assert _scores(grade) == {"forward_diffusion": 0, "cosine_beta_schedule": 1}
    assert "NotImplementedError" in _output(grade, "forward_diffusion")
    assert "flagged for review" not in _output(grade, "forward_diffusion")


# --------------------------------------------------------------------------------------------
# Reaching beyond its own sandbox
# --------------------------------------------------------------------------------------------


def test_a_host_unix_socket_cannot_be_reached(tmp_path):
    path = tmp_path / "host.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(5)
    server.settimeout(0.2)
    os.chmod(path, 0o777)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    attack = _evidence_cell(
        "import socket\n"
        f"for target in [{str(path)!r}] + glob.glob('/run/**/*.sock', recursive=True) + "
        "glob.glob('/var/run/*.sock') + glob.glob('/tmp/**/*.sock', recursive=True):\n"
        "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "    try:\n"
        "        s.connect(target); found.append('connected ' + target)\n"
        "    except OSError as error:\n"
        "        found.append(f'refused {error.errno}')\n")
    try:
        grade = grade_notebook(_notebook(tmp_path, COSINE, attack))
    finally:
        stop.set()
        thread.join(2)
        server.close()
    evidence = _evidence(grade)
    assert accepted == [] and "connected" not in evidence and "refused 2" in evidence
    assert _scores(grade)["cosine_beta_schedule"] == 1


def test_two_graders_at_once_never_see_each_other(tmp_path):
    # The attacker looks for every kernel connection file and every process it can see for
    # 20 s, while an honest notebook is graded beside it.
    attack = _evidence_cell(
        "deadline = time.time() + 20\n"
        "files, pids = set(), set()\n"
        "while time.time() < deadline:\n"
        "    files.update(glob.glob('/tmp/**/connection.json', recursive=True))\n"
        "    files.update(glob.glob('/tmp/**/.kernel-connection.json', recursive=True))\n"
        "    pids.update(p for p in os.listdir('/proc') if p.isdigit())\n"
        "    time.sleep(0.5)\n"
        "found.append(f'files={len(files)} uid={os.getuid()} processes={len(pids)}')\n")
    slow = tmp_path / "a"
    slow.mkdir()
    honest = tmp_path / "b"
    honest.mkdir()
    attacker = subprocess.Popen(
        [sys.executable, "-m", "course", "grade", str(_notebook(slow, COSINE, attack)),
         "--json", str(slow / "r.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(5)
    _cli([_notebook(honest, COSINE, FORWARD)], honest / "r.json")
    attacker.wait(600)
    evidence = json.loads((slow / "r.json").read_text())["tests"][0]["output"]
    files = int(re.search(r"files=(\d+)", evidence)[1])
    assert files <= 1, evidence  # at most its own (its socket folder is mounted)
    assert int(re.search(r"processes=(\d+)", evidence)[1]) < 20, evidence
    if is_root():
        assert f"uid={NOBODY}" in evidence
    assert [t["score"] for t in json.loads((honest / "r.json").read_text())["tests"]] == [2, 1]


def test_root_only_files_and_the_batch_folder_are_out_of_sight(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root-only")
    secret.chmod(0o600)
    neighbour = _notebook(tmp_path, COSINE, FORWARD, name="01_neighbour.ipynb")
    attack = _evidence_cell(
        f"for path in ({str(secret)!r}, {str(neighbour)!r}, '/etc/shadow', '/root/.bashrc'):\n"
        "    try:\n"
        "        found.append('read ' + open(path).read()[:20])\n"
        "    except OSError as error:\n"
        "        found.append(f'closed {error.errno}')\n"
        f"found.append('listing ' + str(len(glob.glob({str(tmp_path)!r} + '/*'))))\n")
    grade = grade_notebook(_notebook(tmp_path, COSINE, attack, name="01_attack.ipynb"))
    evidence = _evidence(grade)
    assert "read" not in evidence and "root-only" not in evidence, evidence
    assert evidence.count("closed") == 4 and "listing 0" in evidence


# --------------------------------------------------------------------------------------------
# Limits that hold for the whole notebook, not per process
# --------------------------------------------------------------------------------------------


needs_cgroup = pytest.mark.skipif(not is_root(), reason="control groups need a root grader")


@needs_cgroup
def test_memory_is_bounded_for_the_whole_process_tree(tmp_path):
    group = Cgroup.create(64, 8, 1.0)
    group.remove()
    if not group.paths:
        pytest.skip(group.note)
    # four children of 700 MB each, every page touched: 2.8 GB under a 1500 MB limit
    attack = _evidence_cell(
        "child = \"x = b'\\\\x01' * (700 * 2**20); time.sleep(4); print('alive')\"\n"
        "kids = [subprocess.Popen([sys.executable, '-c', 'import time\\n' + child],\n"
        "                         stdout=subprocess.PIPE) for _ in range(4)]\n"
        "outs = [k.communicate()[0] for k in kids]\n"
        "found.append(f'alive={sum(b\"alive\" in o for o in outs)}')\n")
    grade = grade_notebook(_notebook(tmp_path, COSINE, attack), limits=Limits(memory_mb=1500))
    output = _output(grade, "forward_diffusion")
    alive = re.search(r"alive=(\d+)", output)
    # either the kernel itself was the one killed, or at most two children fit
    assert alive is None or int(alive[1]) <= 2, output
    assert _scores(grade)["cosine_beta_schedule"] == 1


@needs_cgroup
def test_processes_are_counted_for_the_whole_tree(tmp_path):
    attack = _evidence_cell(
        "kids = []\n"
        "for _ in range(300):\n"
        "    try:\n"
        "        kids.append(subprocess.Popen(['/bin/sleep', '30']))\n"
        "    except OSError:\n"
        "        break\n"
        "found.append(f'started={len(kids)}')\n"
        "for k in kids:\n"
        "    k.kill()\n")
    grade = grade_notebook(_notebook(tmp_path, COSINE, attack), limits=Limits(max_processes=64))
    started = int(re.search(r"started=(\d+)", _evidence(grade))[1])
    assert started < 64
    assert _scores(grade)["cosine_beta_schedule"] == 1


def test_disk_writes_are_capped_in_total_and_stay_off_the_host(tmp_path):
    before = psutil.disk_usage("/").used
    attack = _evidence_cell(
        "written = 0\n"
        "chunk = b'\\x01' * 2**20\n"
        "for i in range(40):\n"
        "    try:\n"
        "        with open(f'/tmp/fill-{i}', 'wb') as out:\n"
        "            for _ in range(20):\n"
        "                out.write(chunk); written += 1\n"
        "    except OSError:\n"
        "        break\n"
        "found.append(f'written={written}')\n")
    grade = grade_notebook(_notebook(tmp_path, COSINE, attack), limits=Limits(file_mb=64))
    written = int(re.search(r"written=(\d+)", _evidence(grade))[1])
    assert written <= 64, written  # 800 MB tried, in files of 20 MB each
    assert psutil.disk_usage("/").used - before < 200 * 2 ** 20


def test_a_huge_output_message_is_dropped_before_the_grader_reads_it(tmp_path):
    # 120 MB: the grader grows about 370 MB reading it uncapped, about 110 MB with the cap.
    # A dropped message leaves the cell waiting for its end until the cell limit.
    flood = ("print('x' * (120 * 2**20))\n")
    process = psutil.Process()
    peak, stop = [process.memory_info().rss], threading.Event()

    def watch():
        while not stop.is_set():
            peak.append(process.memory_info().rss)
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        grade = grade_notebook(_notebook(tmp_path, COSINE, flood, FORWARD),
                               limits=Limits(message_mb=16, cell_timeout=20))
    finally:
        stop.set()
        thread.join(2)
    assert (max(peak) - peak[0]) < 200 * 2 ** 20, f"grew {(max(peak) - peak[0]) / 2**20:.0f} MB"
    assert _scores(grade) == {"forward_diffusion": 2, "cosine_beta_schedule": 1}


# --------------------------------------------------------------------------------------------
# The console and the grader's life
# --------------------------------------------------------------------------------------------


def test_escapes_in_an_error_cannot_rewrite_the_console_or_forge_lines(tmp_path):
    forge = ("def forward_diffusion(x0, t, betas, noise=None):\n"
             "    raise ValueError('\\x1b[2J\\x1b[H\\nFORGED total: 99/99\\r\\u202e')")
    results = tmp_path / "r.json"
    run = _cli([_notebook(tmp_path, COSINE, forge)], results)
    assert "\x1b" not in run.stdout and "\u202e" not in run.stdout
    assert not any(line.startswith("FORGED") for line in run.stdout.splitlines())
    text = results.read_text()
    assert "\\u001b" not in text and "\\\\x1b[2J" in text  # escaped once by us, once by JSON


def test_no_kernel_outlives_a_grader_killed_with_sigkill(tmp_path):
    marker = f"course-orphan-{uuid.uuid4().hex}"
    spawn = ("import subprocess, time\n"
             f"subprocess.Popen(['/bin/sh', '-c', 'sleep 300', {marker!r}], "
             "start_new_session=True)\n"
             "time.sleep(600)")
    grader = subprocess.Popen([sys.executable, "-m", "course", "grade",
                               str(_notebook(tmp_path, COSINE, spawn))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _stray_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _stray_processes(marker), "the notebook never started its process"
    kernels = [p for p in psutil.Process(grader.pid).children(recursive=True)]
    grader.send_signal(signal.SIGKILL)
    grader.wait(10)
    deadline = time.monotonic() + 10
    while (_stray_processes(marker) or any(p.is_running() and p.status() != "zombie"
                                           for p in kernels)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _stray_processes(marker) == []
    assert not any(p.is_running() and p.status() != "zombie" for p in kernels)
