"""Run `process_scene` for many scenes: in this process one after another (`SerialExecutor`), or as one Ray
task per scene (`RayExecutor`: a local Ray started here, or a cluster via `address`).

Both call `on_progress(name, info)` with what a running scene reports and `on_result(SceneResult)` as each
scene finishes. Ray is imported lazily (optional extra `cluster`). Worker loss (a killed or crashed worker
process, a lost node) is retried by Ray up to `retries` times; the retried task resumes the scene from its
stage markers and last checkpoint. Errors inside a scene never reach Ray: `process_scene` returns them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labelfield.batch.pipeline import SceneResult, SceneSpec, one_line, process_scene
from labelfield.errors import LabelfieldError

OnProgress = Callable[[str, dict[str, Any]], None]
OnResult = Callable[[SceneResult], None]
TOKEN_FILE = ".batch_token"


class Unreachable(LabelfieldError):
    """A worker cannot see a scene path or the output folder: the batch stops (exit 2)."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise LabelfieldError(
            "labelfield batch needs Ray: pip install 'labelfield[cluster]' (or run with "
            "--local to process the scenes one by one in this process)"
        ) from None
    return ray


def _unreachable(res: SceneResult) -> Unreachable:
    return Unreachable(
        f"a worker cannot see scene path {res.error}; the scenes and --out must be on a filesystem every worker mounts"
    )


class SerialExecutor:
    """Every scene in this process, in manifest order (no Ray needed; no retries: nothing to lose)."""

    name = "local (serial)"

    def run(
        self, specs: list[SceneSpec], out_dir: Path, batch_id: str, on_progress: OnProgress, on_result: OnResult
    ) -> None:
        for spec in specs:
            on_progress(spec.name, {"phase": "start"})
            res = process_scene(spec, out_dir, batch_id, report=lambda info, n=spec.name: on_progress(n, info))
            if res.status == "unreachable":
                raise _unreachable(res)
            on_result(res)


def start_local_ray(num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start a quiet local Ray (no dashboard, worker output not forwarded) whose workers import this labelfield."""
    ray = import_ray()
    import labelfield

    src = str(Path(labelfield.__file__).resolve().parents[1])  # workers inherit the environment of ray.init
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([src, *parts])
    ray.init(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        configure_logging=True,
    )


def _scene_task(spec: dict[str, Any], out_dir: str, batch_id: str, board: Any) -> dict[str, Any]:
    """Body of the Ray task: one scene; progress goes to the `board` actor (fire and forget)."""
    s = SceneSpec(**spec)
    board.update.remote(s.name, {"phase": "start", "pid": os.getpid()})
    res = process_scene(s, out_dir, batch_id, report=lambda info: board.update.remote(s.name, info))
    return dataclasses.asdict(res)


def _check_visible(paths: list[str], token_file: str, token: str) -> dict[str, Any]:
    """Run on each node: which of `paths` (and the output folder's token) this node cannot see."""
    import socket

    missing = [p for p in paths if not Path(p).exists()]
    try:
        out_ok = Path(token_file).read_text() == token
    except OSError:
        out_ok = False
    return {"host": socket.gethostname(), "missing": missing, "out_ok": out_ok}


class _Board:
    """Ray actor collecting the progress every running scene reports (the driver polls `take`)."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, dict[str, Any]]] = []

    def update(self, name: str, info: dict[str, Any]) -> None:
        self.updates.append((name, info))

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        out, self.updates = self.updates, []
        return out


@dataclasses.dataclass
class RayExecutor:
    """One Ray task per scene with `cpus`/`gpus` each; `address` None starts a local Ray of `num_cpus` CPUs."""

    address: str | None = None
    cpus: float = 2.0
    gpus: float = 0.0
    retries: int = 2
    num_cpus: int | None = None
    num_gpus: int | None = None

    @property
    def name(self) -> str:
        return f"ray ({self.address or 'local'})"

    def run(
        self, specs: list[SceneSpec], out_dir: Path, batch_id: str, on_progress: OnProgress, on_result: OnResult
    ) -> None:
        ray = import_ray()
        started = False
        if not ray.is_initialized():
            if self.address:
                try:
                    ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
                except Exception as e:  # noqa: BLE001 - any connection failure is one line for the user
                    raise LabelfieldError(f"--address {self.address}: cannot connect to Ray ({one_line(e)})") from None
            else:
                start_local_ray(self.num_cpus, self.num_gpus)
            started = True
        try:
            self._check_resources(ray)
            self._check_nodes(ray, specs, out_dir, batch_id)
            self._run(ray, specs, out_dir, batch_id, on_progress, on_result)
        finally:
            if started:
                ray.shutdown()

    def _check_resources(self, ray) -> None:
        """A task asking more than any node has would wait forever: say so now."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(r.get("CPU", 0) >= self.cpus and r.get("GPU", 0) >= self.gpus for r in nodes):
            most = max((r.get("CPU", 0) for r in nodes), default=0)
            gpus = max((r.get("GPU", 0) for r in nodes), default=0)
            raise LabelfieldError(
                f"no Ray node has {self.cpus:g} CPUs and {self.gpus:g} GPUs for one scene (the "
                f"largest has {most:g} CPUs, {gpus:g} GPUs): lower --cpus-per-scene / "
                "--gpus-per-scene"
            )

    def _check_nodes(self, ray, specs: list[SceneSpec], out_dir: Path, batch_id: str) -> None:
        """Every alive node must see every scene path and the output folder (a shared filesystem)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token_file = out_dir / TOKEN_FILE
        token_file.write_text(batch_id)
        paths = sorted({p for s in specs for p in (s.path, s.gt) if p is not None})
        check = ray.remote(num_cpus=0)(_check_visible)
        refs = [
            check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                paths, str(token_file), batch_id
            )
            for n in ray.nodes()
            if n.get("Alive")
        ]
        for r in ray.get(refs):
            if r["missing"]:
                more = f" (and {len(r['missing']) - 1} more)" if len(r["missing"]) > 1 else ""
                raise Unreachable(
                    f"worker on {r['host']} cannot see scene path {r['missing'][0]}{more}; the scenes "
                    "must be on a filesystem every worker mounts"
                )
            if not r["out_ok"]:
                raise Unreachable(
                    f"worker on {r['host']} cannot see the output folder {out_dir} (or sees another "
                    "one there); --out must be on a filesystem every worker mounts"
                )

    def _run(
        self, ray, specs: list[SceneSpec], out_dir: Path, batch_id: str, on_progress: OnProgress, on_result: OnResult
    ) -> None:
        board = ray.remote(num_cpus=0)(_Board).remote()
        task = ray.remote(_scene_task).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries, retry_exceptions=False
        )
        pending = {task.remote(dataclasses.asdict(s), str(out_dir), batch_id, board): s for s in specs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
                for name, info in ray.get(board.take.remote()):
                    on_progress(name, info)
                for ref in ready:
                    spec = pending.pop(ref)
                    res = self._result(ray, ref, spec, out_dir)
                    if res.status == "unreachable":
                        raise _unreachable(res)
                    on_result(res)
        finally:
            for ref in pending:  # Ctrl-C or a batch-stopping error: the rest resumes on the next run
                ray.cancel(ref, force=True)

    def _result(self, ray, ref, spec: SceneSpec, out_dir: Path) -> SceneResult:
        try:
            return SceneResult.from_dict(ray.get(ref))
        except ray.exceptions.RayError as e:  # the worker died more than `retries` times, or the node went away
            res = SceneResult(spec.name, "failed", path=spec.path, attempts=self.retries + 1)
            res.error = f"worker lost {self.retries + 1} times: {one_line(e)}"[:300]
            return res
