"""How the tracking store holds when a cluster's worth of runs log at once: one sqlite file on the
shared filesystem (tracking=mlflow) beside an MLflow server on its own MariaDB (tracking=server,
launchers/mlflow_server.sh --db mariadb), in one run.

    python benchmarks/tracking_load.py [--nodes 3] [--runs-per-node 2] [--points 300] [--batch 10]
                                       [--server-workers 1] [--server-uri URL]
                                       [--sqlite-dir DIR] [--json PATH]

N nodes x M runs, one writer process each, log as fast as they can, twice per store:
``log_metric`` (one point per call, a tight loop) and ``log_batch`` (a step's --batch metrics per
call: what a pinchpoint run does, RunTracker.log_metrics -> mlflow.log_metrics), through
pinchpoint's own RunTracker and its retry on sqlite's 'database is locked'. Writers start together
(a file barrier after their imports and run creation, so start-up is not timed) and sit on the
emulated nodes (``ip netns exec pp-nodeI``, the server reached over the bridge) when
``launchers/slurm_up.sh --nodes N`` has made them, else in this namespace (said in the output).
Afterwards every point is counted back, through MLflow and in the database itself: none may be
lost or stored twice, and each must hold the value written (asserted; the table says so too).
Per-call times are per writer (median, p95), then the spread of those over the writers.

Read the times for what they are on a small machine: writers, server and database share its
cores, so a call's time is mostly waiting for a core. CPU per point (writers', and the server's +
database's) is the figure contention distorts least.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = "10.77.0.1"   # launchers/slurm/nodes.sh: the emulated nodes' bridge, this namespace's end
EXPERIMENT = "tracking_load"
MODES = ("log_metric", "log_batch")
READY_TIMEOUT_S = 600  # a writer that neither finishes a phase nor dies within this is stuck


def value(writer: int, step: int, k: int = 0) -> float:
    """Each point's value names its writer, step and key, so a misplaced point is caught."""
    return writer * 1e6 + step + k / 100


# --- writer (one process per run) --------------------------------------------------------------

class Retries(logging.Handler):
    """Counts pinchpoint's retries of a locked sqlite store (store.retrying logs each one)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record):
        self.count += "store busy" in record.getMessage()


def barrier(folder: Path, phase: str, me: int) -> None:
    (folder / f"ready-{phase}-{me}").touch()
    while not (folder / f"go-{phase}").exists():
        time.sleep(0.005)


def writer(args) -> None:
    import mlflow

    from pinchpoint.tracking.mlflow_run import RunTracker
    from pinchpoint.tracking.store import retrying
    tracker = RunTracker(args.uri, args.artifact_root, EXPERIMENT, False, 10.0)
    run_id = tracker.start(f"writer{args.writer}", {"benchmark": "tracking_load"})
    retries = Retries()
    store_log = logging.getLogger("pinchpoint.tracking.store")
    store_log.setLevel(logging.DEBUG)
    store_log.addHandler(retries)
    store_log.propagate = False
    w, folder, out = args.writer, Path(args.barrier), {"run_id": run_id}
    for mode in MODES:
        if mode == "log_metric":
            def call(step):
                return retrying(lambda: mlflow.log_metric("single", value(w, step), step=step))
        else:
            def call(step):
                tracker.log_metrics({f"batch/{k}": value(w, step, k) for k in range(args.batch)},
                                    step=step)
        times, errors, retried, first_error = [], 0, retries.count, None
        barrier(folder, mode, w)
        cpu, began = time.process_time(), time.time()
        for step in range(args.points):
            t = time.perf_counter()
            try:
                call(step)
            except Exception as err:   # counted, and the points then show as lost
                errors += 1
                first_error = first_error or f"{type(err).__name__}: {str(err)[:300]}"
            times.append(time.perf_counter() - t)
        out[mode] = {"call_s": times, "began": began, "ended": time.time(),
                     "cpu_s": time.process_time() - cpu, "errors": errors,
                     "first_error": first_error, "retries": retries.count - retried}
    barrier(folder, "end", w)
    tracker.end("success")
    Path(args.result).write_text(json.dumps(out))


# --- the stores ---------------------------------------------------------------------------------

def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_server(host: str, workers: int, base: Path) -> dict | None:
    """launchers/mlflow_server.sh --db mariadb --daemon in a state folder of this benchmark's own;
    None (with the launcher's reason printed) when MariaDB cannot start here."""
    state = base / "server"
    env = {**os.environ, "PINCHPOINT_MLFLOW_STATE": str(state),
           "PINCHPOINT_MLFLOW_DB_PORT": str(free_port("127.0.0.1")),
           "PINCHPOINT_MLFLOW_HOLDER": str(os.getpid())}
    with tempfile.TemporaryFile("w+") as log:   # a file: the daemons must not hold a pipe open
        proc = subprocess.run([str(ROOT / "launchers/mlflow_server.sh"), "--db", "mariadb",
                               "--host", host, "--port", str(free_port(host)), "--workers",
                               str(workers), "--artifacts", str(base / "server-artifacts"),
                               "--daemon"], env=env, stdout=log, stderr=subprocess.STDOUT)
        log.seek(0)
        text = log.read().strip()
    if proc.returncode != 0:
        print(f"!! no server on MariaDB: mlflow_server.sh exited {proc.returncode}: "
              f"{text.splitlines()[-1] if text else ''}")
        return None
    uri = text.splitlines()[-1].removeprefix("export MLFLOW_TRACKING_URI=")
    return {"name": "server + MariaDB", "uri": uri, "artifact_root": "mlflow-artifacts:/",
            "state": state, "env": env}


def stop_server(store: dict) -> None:
    subprocess.run([str(ROOT / "launchers/mlflow_server_down.sh"), "--purge"], env=store["env"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def store_processes(store: dict) -> dict[str, list]:
    """The server's processes (its process group) and its MariaDB, for their CPU time."""
    import psutil
    state, found = store.get("state"), {"server": [], "db": []}
    if state is None:
        return found
    if (state / "mlflow.pid").exists():
        group = int((state / "mlflow.pid").read_text())
        for p in psutil.process_iter():
            with contextlib.suppress(OSError):
                if os.getpgid(p.pid) == group:
                    found["server"].append(p)
    if (state / "mysql/mariadbd.pid").exists():
        with contextlib.suppress(psutil.NoSuchProcess):
            found["db"].append(psutil.Process(int((state / "mysql/mariadbd.pid").read_text())))
    return found


def store_cpu_s(store: dict) -> dict[str, float]:
    return {part: cpu_s(processes) for part, processes in store_processes(store).items()}


def cpu_s(processes) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:   # exited: its time is gone with it (the server's do not exit mid-run)
            pass
    return total


def stored_points(store: dict, run_ids: list[str]) -> list[tuple] | None:
    """(run_uuid, key, step, value) rows straight from the database, or None when this benchmark
    does not own it (--server-uri)."""
    marks = ",".join(["%s"] * len(run_ids))
    sql = f"SELECT run_uuid, `key`, step, value FROM metrics WHERE run_uuid IN ({marks})"
    if store.get("sqlite"):
        with sqlite3.connect(store["sqlite"]) as db:
            return db.execute(sql.replace("%s", "?").replace("`", '"'), run_ids).fetchall()
    if store.get("state"):
        import pymysql
        my = store["state"] / "mysql"
        conn = pymysql.connect(unix_socket=str(my / "mysql.sock"), user="mlflow",
                               password=(my / "mlflow.pass").read_text(), database="mlflow")
        with conn, conn.cursor() as cur:
            cur.execute(sql, run_ids)
            return list(cur.fetchall())
    return None


# --- one store under load -----------------------------------------------------------------------

def place(cmd: list[str], node: int, on_nodes: bool) -> list[str]:
    return ["ip", "netns", "exec", f"pp-node{node}", *cmd] if on_nodes else cmd


def wait_ready(folder: Path, phase: str, procs: list, logs: list[Path]) -> None:
    until = time.time() + READY_TIMEOUT_S
    while len(list(folder.glob(f"ready-{phase}-*"))) < len(procs):
        for proc, log in zip(procs, logs):
            if proc.poll() not in (None, 0):
                raise RuntimeError(f"a writer exited {proc.returncode} before {phase}: "
                                   f"{log.read_text()[-1500:]}")
        if time.time() > until:
            raise RuntimeError(f"writers not ready for {phase} after {READY_TIMEOUT_S} s")
        time.sleep(0.02)


def load(store: dict, args, on_nodes: bool, base: Path) -> dict:
    folder = base / f"barrier-{store['key']}"
    folder.mkdir()
    writers = args.nodes * args.runs_per_node
    procs, logs, results = [], [], []
    for w in range(writers):
        node = w // args.runs_per_node + 1
        results.append(folder / f"writer{w}.json")
        logs.append(folder / f"writer{w}.log")
        cmd = [sys.executable, __file__, "--writer", str(w), "--uri", store["uri"],
               "--artifact-root", store["artifact_root"], "--barrier", str(folder),
               "--result", str(results[-1]), "--points", str(args.points),
               "--batch", str(args.batch)]
        with open(logs[-1], "w") as log:
            procs.append(subprocess.Popen(place(cmd, node, on_nodes), stdout=log,
                                          stderr=subprocess.STDOUT, cwd=ROOT))
    try:
        store_cpu = {}
        for mode, following in zip(MODES, (*MODES[1:], "end")):
            wait_ready(folder, mode, procs, logs)
            before = store_cpu_s(store)
            (folder / f"go-{mode}").touch()
            wait_ready(folder, following, procs, logs)   # every writer finished this mode
            store_cpu[mode] = {k: v - before[k] for k, v in store_cpu_s(store).items()}
        (folder / "go-end").touch()
        for proc, log in zip(procs, logs):
            if proc.wait(timeout=300) != 0:
                raise RuntimeError(f"a writer exited {proc.returncode}: {log.read_text()[-1500:]}")
    finally:
        for proc in procs:   # only on an error above: a writer that is still running is stuck
            if proc.poll() is None:
                proc.kill()
    per_writer = [json.loads(r.read_text()) for r in results]
    return {"writers": per_writer, "store_cpu_s": store_cpu}


def count_back(store: dict, per_writer: list[dict], args) -> dict:
    """Every point read back through MLflow, and from the database itself where we own it."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(store["uri"])
    keys = {"log_metric": ["single"], "log_batch": [f"batch/{k}" for k in range(args.batch)]}
    run_ids = [r["run_id"] for r in per_writer]
    stored = None
    if (rows := stored_points(store, run_ids)) is not None:
        stored = {}
        for run_id, key, step, v in rows:
            stored.setdefault((run_id, key), []).append((step, v))
    out = {}
    for mode in MODES:
        want, api, db = len(run_ids) * args.points * len(keys[mode]), [], []
        for w, run_id in enumerate(run_ids):
            for k, key in enumerate(keys[mode]):
                history = client.get_metric_history(run_id, key)
                expected = {(s, value(w, s, k)) for s in range(args.points)}
                api.append(([(m.step, m.value) for m in history], expected))
                if stored is not None:
                    db.append((stored.get((run_id, key), []), expected))
        out[mode] = {"expected": want, **tally("api", api)}
        if stored is not None:
            out[mode].update(tally("db", db))
    return out


def tally(where: str, pairs: list) -> dict:
    found = sum(len(points) for points, _ in pairs)
    lost = sum(len(expected - set(points)) for points, expected in pairs)
    duplicated = sum(len(points) - len(set(points)) for points, _ in pairs)
    foreign = sum(len(set(points) - expected) for points, expected in pairs)
    return {f"{where}_found": found, f"{where}_lost": lost, f"{where}_duplicated": duplicated,
            f"{where}_wrong": foreign}


# --- the report -------------------------------------------------------------------------------

def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20, method="inclusive")[-1]


def summarise(store: dict, loaded: dict, counted: dict) -> list[dict]:
    rows = []
    for mode in MODES:
        w = [r[mode] for r in loaded["writers"]]
        medians = [statistics.median(x["call_s"]) * 1e3 for x in w]
        p95s = [p95(x["call_s"]) * 1e3 for x in w]
        span = max(x["ended"] for x in w) - min(x["began"] for x in w)
        points = counted[mode]["expected"]
        rows.append({
            "store": store["name"], "mode": mode, "writers": len(w),
            "calls": sum(len(x["call_s"]) for x in w), "points": points, **counted[mode],
            "median_ms": statistics.median(medians),
            "median_ms_range": [min(medians), max(medians)],
            "p95_ms": statistics.median(p95s), "p95_ms_range": [min(p95s), max(p95s)],
            "points_per_s": points / span, "wall_s": span,
            "writer_cpu_ms_per_point": sum(x["cpu_s"] for x in w) / points * 1e3,
            # None: no server (sqlite: its work is in the writers), or one we did not start
            **{f"{part}_cpu_ms_per_point": (loaded["store_cpu_s"][mode][part] / points * 1e3
                                            if "state" in store else None)
               for part in ("server", "db")},
            "retries": sum(x["retries"] for x in w), "errors": sum(x["errors"] for x in w),
            "first_error": next((x["first_error"] for x in w if x["first_error"]), None),
            "per_writer": [{"median_ms": m, "p95_ms": p, "errors": x["errors"],
                            "retries": x["retries"]} for m, p, x in zip(medians, p95s, w)]})
    return rows


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def print_table(rows: list[dict]) -> None:
    head = (f"{'store':<18} {'mode':<10} {'points':>7} {'back: API':>9} {'DB':>7} {'lost':>5} "
            f"{'dup':>4} {'call ms: median [writers]':>26} {'p95 [writers]':>22} {'points/s':>9} "
            f"{'CPU ms/pt: writers':>18} {'server':>6} {'DB':>6} {'retries':>7} {'errors':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        db = r.get("db_found", "-")
        lost = r["api_lost"] + r.get("db_lost", 0)
        dup = r["api_duplicated"] + r.get("db_duplicated", 0)
        lo, hi = r["median_ms_range"]
        plo, phi = r["p95_ms_range"]
        print(f"{r['store']:<18} {r['mode']:<10} {r['points']:>7} {r['api_found']:>9} {db:>7} "
              f"{lost:>5} {dup:>4} {r['median_ms']:>9.2f} [{lo:6.2f}-{hi:6.2f}] "
              f"{r['p95_ms']:>7.1f} [{plo:5.1f}-{phi:6.1f}] {r['points_per_s']:>9.0f} "
              f"{r['writer_cpu_ms_per_point']:>18.3f} {ms(r['server_cpu_ms_per_point']):>6} "
              f"{ms(r['db_cpu_ms_per_point']):>6} "
              f"{r['retries']:>7} {r['errors']:>6}")


def nodes_up(n: int) -> bool:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    have = {line.split()[0] for line in names.splitlines() if line.strip()}
    addrs = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return BRIDGE in addrs and all(f"pp-node{i}" in have for i in range(1, n + 1))


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3, help="N: emulated nodes with writers")
    ap.add_argument("--runs-per-node", type=int, default=2, help="M: concurrent runs per node")
    ap.add_argument("--points", type=int, default=300, help="steps each run logs, per mode")
    ap.add_argument("--batch", type=int, default=10, help="metrics per log_batch call")
    ap.add_argument("--server-workers", type=int, default=1, help="mlflow server --workers")
    ap.add_argument("--sqlite-dir", help="an empty folder for the sqlite file, e.g. on a real NFS "
                                         "mount (default: a fresh folder under the temp dir)")
    ap.add_argument("--server-uri", help="use this running server instead of starting one "
                                         "(points then counted back through MLflow only)")
    ap.add_argument("--json", default=str(ROOT / "outputs/benchmarks/tracking_load.json"))
    # writer side (this file runs itself once per writer)
    ap.add_argument("--writer", type=int, help=argparse.SUPPRESS)
    for name in ("--uri", "--artifact-root", "--barrier", "--result"):
        ap.add_argument(name, help=argparse.SUPPRESS)
    return ap, ap.parse_args()


def check_inputs(ap, args, on_nodes: bool) -> None:
    for name in ("nodes", "runs_per_node", "points", "batch", "server_workers"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.sqlite_dir and (Path(args.sqlite_dir) / "mlflow.db").exists():
        ap.error(f"--sqlite-dir {args.sqlite_dir} already holds mlflow.db: give an empty folder")
    if args.server_uri:
        where = ["ip", "netns", "exec", "pp-node1"] if on_nodes else []
        if subprocess.run([*where, "curl", "-sf", "-m", "3", "-o", "/dev/null",
                           args.server_uri.rstrip("/") + "/health"]).returncode != 0:
            ap.error(f"--server-uri {args.server_uri} does not answer /health from "
                     f"{'pp-node1' if on_nodes else 'here'}: give an address the writers reach")


def print_header(args, on_nodes: bool, load: float) -> None:
    writers = args.nodes * args.runs_per_node
    print(f"== tracking load: {args.nodes} nodes x {args.runs_per_node} runs = {writers} writer "
          f"processes, {args.points} steps each per mode; log_batch = {args.batch} metrics/call ==")
    if on_nodes:
        print(f"writers on the emulated nodes pp-node1..pp-node{args.nodes} (ip netns exec); "
              f"the server listens on the bridge {BRIDGE}; the sqlite file is on the filesystem "
              "the nodes share (one machine's disk: POSIX locks work, unlike many NFS mounts)")
    else:
        print(f"NOTE: no emulated nodes pp-node1..pp-node{args.nodes} with bridge {BRIDGE} "
              f"(launchers/slurm_up.sh --nodes {args.nodes} makes them): all writers run in this "
              "namespace and reach the server on loopback")
    print(f"this machine: {os.cpu_count()} CPUs, load {load:.1f}; {writers} writers + server + "
          "database share them, so per-call times are mostly waiting for a core: compare the "
          "two stores under the same load, not with a cluster's absolute figures")


def make_stores(args, on_nodes: bool, base: Path) -> list[dict]:
    db = (Path(args.sqlite_dir) if args.sqlite_dir else base / "sqlite") / "mlflow.db"
    stores = [{"key": "sqlite", "name": "sqlite file", "uri": f"sqlite:///{db}", "sqlite": db,
               "artifact_root": str(db.parent / "artifacts")}]
    if args.server_uri:
        stores.append({"key": "server", "name": "server (given)", "uri": args.server_uri,
                       "artifact_root": "mlflow-artifacts:/"})
    elif server := start_server(BRIDGE if on_nodes else "127.0.0.1", args.server_workers, base):
        stores.append({"key": "server", **server})
    return stores


def measure(stores: list[dict], args, on_nodes: bool, base: Path) -> list[dict]:
    from pinchpoint.tracking.store import ensure_experiment, ensure_store
    rows = []
    for store in stores:
        # The schema and experiment exist before the clock, as for a sweep's points.
        ensure_store(store["uri"])
        ensure_experiment(store["uri"], EXPERIMENT, store["artifact_root"])
        loaded = load(store, args, on_nodes, base)
        rows += summarise(store, loaded, count_back(store, loaded["writers"], args))
    return rows


def main() -> None:
    ap, args = parse_args()
    if args.writer is not None:
        return writer(args)
    on_nodes = nodes_up(args.nodes)
    check_inputs(ap, args, on_nodes)
    load_before = os.getloadavg()[0]
    print_header(args, on_nodes, load_before)
    base = Path(tempfile.mkdtemp(prefix="pinchpoint-tracking-load-"))
    base.chmod(0o755)   # the server's MariaDB runs as the mysql user, who must enter it
    stores = []
    try:
        stores = make_stores(args, on_nodes, base)
        rows = measure(stores, args, on_nodes, base)
    finally:
        for store in stores:
            if "env" in store:
                stop_server(store)
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (at the start: {load_before:.1f})")
    print_table(rows)
    print("\nback: points read back through MLflow (API) and from the database itself (DB); "
          "lost/dup/wrong summed over both; call ms: median over writers of each writer's "
          "median (p95), [min-max over writers]; points/s: all writers together, first call to "
          "last; CPU ms/pt: the writers' own CPU, the server's and its database's (sqlite's work "
          "is in the writers')")
    for r in rows:
        if r["first_error"]:
            print(f"first error ({r['store']}, {r['mode']}): {r['first_error']}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "config": {k: v for k, v in vars(args).items() if k not in (
            "writer", "uri", "artifact_root", "barrier", "result")},
        "on_emulated_nodes": on_nodes, "cpus": os.cpu_count(),
        "load_average": {"start": load_before, "end": os.getloadavg()[0]}, "rows": rows}, indent=1))
    print(f"JSON: {args.json}")
    bad = [r for r in rows if r["api_lost"] + r["api_duplicated"] + r["api_wrong"] +
           r.get("db_lost", 0) + r.get("db_duplicated", 0) + r.get("db_wrong", 0)]
    assert not bad, f"points lost, duplicated or wrong: {[(r['store'], r['mode']) for r in bad]}"
    print(f"every point counted back: {sum(r['points'] for r in rows)} written, none lost, "
          "none duplicated, every value as written")


if __name__ == "__main__":
    main()
