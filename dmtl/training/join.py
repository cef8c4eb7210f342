"""The roll call before a multi-process job joins JAX's coordination service.

JAX's ``jax.distributed.initialize`` aborts the process (a C++ check failure) when two processes claim one id, and
waits silently when the processes were told different process counts or the coordinator is unreachable. So every
process first reports what it was told to process 0, over a plain TCP connection to the coordinator's own
``host:port`` (JAX's coordinator takes that port only after the roll call): a duplicate id, a count that differs
between processes, an id out of range or nobody answering within the timeout is one line on every process that can
be told, and waiting prints how long is left ("waiting for 1 more process at HOST:PORT, 50 s left").
"""
from __future__ import annotations

import json
import socket
import sys
import time

JOIN_ENV = "DMTL_JOIN_TIMEOUT"  # seconds every process waits for the others to report (default 300)
DEFAULT_TIMEOUT = 300.0
REPORT_EVERY = 10.0


class JoinError(RuntimeError):
    """The processes of a multi-process job cannot form one job (one line)."""


def _say(message: str) -> None:
    print(f"train: {message}", file=sys.stderr, flush=True)


def _split(coordinator: str) -> tuple[str, int]:
    host, sep, port = coordinator.rpartition(":")
    if not sep or not port.isdigit():
        raise JoinError(f"the coordinator address must be HOST:PORT, got {coordinator[:100]!r}")
    return host.strip("[]"), int(port)


def roll_call(coordinator: str, process_id: int, num_processes: int, timeout: float | None = None) -> None:
    """Returns once every process of the job has reported the same process count and a distinct id to process 0;
    else raises :class:`JoinError` (within ``timeout`` seconds)."""
    if num_processes < 2:
        return
    host, port = _split(coordinator)
    deadline = time.monotonic() + float(timeout if timeout is not None else DEFAULT_TIMEOUT)
    me = {"process_id": int(process_id), "num_processes": int(num_processes), "host": socket.gethostname()}
    if process_id == 0:
        _gather(host, port, me, deadline)
    else:
        _report(host, port, me, deadline)


def _gather(host: str, port: int, me: dict, deadline: float) -> None:
    """Process 0: listens on the coordinator's port, checks every report, answers all at once."""
    server = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("", port))
    except OSError as error:
        server.close()
        raise JoinError(f"process 0 cannot listen on port {port} ({error.strerror}): another process already holds "
                        f"it: was --process-id 0 given twice, or is an earlier job still running?") from None
    server.listen(64)
    peers: dict[int, socket.socket] = {}
    wanted = me["num_processes"] - 1
    next_report = time.monotonic()
    try:
        while len(peers) < wanted:
            now = time.monotonic()
            if now >= deadline:
                raise JoinError(f"only {len(peers) + 1} of {me['num_processes']} processes reported at port {port} "
                                f"in time: start the same command on every process (ids 0..{wanted}), or raise "
                                f"{JOIN_ENV}")
            if now >= next_report:
                _say(f"waiting for {wanted - len(peers)} more process(es) at {host}:{port}, "
                     f"{deadline - now:.0f} s left")
                next_report = now + REPORT_EVERY
            server.settimeout(min(1.0, max(0.05, deadline - now)))
            try:
                connection, _ = server.accept()
            except socket.timeout:
                continue
            report = _receive(connection, deadline)
            problem = _problem(report, me, peers)
            if problem:
                for peer in [*peers.values(), connection]:
                    _send(peer, {"error": problem})
                _close_after_peer(connection)
                raise JoinError(problem)
            peers[int(report["process_id"])] = connection
        for peer in peers.values():
            _send(peer, {"ok": True})
    finally:
        for peer in peers.values():
            _close_after_peer(peer)
        server.close()


def _problem(report, me: dict, peers: dict) -> str | None:
    """What is wrong with one process's report, as the line every process prints; None if nothing."""
    if not isinstance(report, dict) or not isinstance(report.get("process_id"), int) or not isinstance(
            report.get("num_processes"), int):
        return "a process sent something that is not a dmtl roll call to the coordinator's port"
    pid, count = report["process_id"], report["num_processes"]
    if count != me["num_processes"]:
        return (f"process {pid} was told --num-processes {count}, process 0 was told {me['num_processes']}: give "
                f"every process the same count")
    if pid == 0 or pid in peers:
        return f"two processes were given --process-id {pid}: give each process its own id (0..{count - 1})"
    if not 0 < pid < count:
        return f"process id {pid} is out of range for {count} processes (0..{count - 1})"
    return None


def _report(host: str, port: int, me: dict, deadline: float) -> None:
    """Any other process: reports to process 0 (retrying until it listens), then waits for the answer."""
    next_report = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise JoinError(f"process {me['process_id']}: no process 0 answered at {host}:{port} in time: check "
                            f"--coordinator, and start process 0 there (or raise {JOIN_ENV})")
        if now >= next_report:
            _say(f"process {me['process_id']}: waiting for process 0 at {host}:{port}, {deadline - now:.0f} s left")
            next_report = now + REPORT_EVERY
        try:
            connection = socket.create_connection((host, port), timeout=min(2.0, max(0.05, deadline - now)))
        except OSError:
            time.sleep(0.2)
            continue
        try:
            _send(connection, me)
            answer = _receive(connection, deadline)
        finally:
            connection.close()  # this side closes first: process 0's port is free for JAX at once
        if answer is None:
            raise JoinError(f"process {me['process_id']}: the roll call at {host}:{port} got no answer from process 0 "
                            f"in time (is another program listening there?)")
        if "error" in answer:
            raise JoinError(str(answer["error"]))
        return


def _send(connection: socket.socket, message: dict) -> None:
    try:
        connection.sendall((json.dumps(message) + "\n").encode())
    except OSError:
        pass


def _receive(connection: socket.socket, deadline: float):
    """One JSON line from ``connection`` (None if nothing complete arrives before ``deadline``)."""
    data = b""
    while b"\n" not in data and len(data) < 4096:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        connection.settimeout(remaining)
        try:
            chunk = connection.recv(4096)
        except (socket.timeout, OSError):
            return None
        if not chunk:
            break
        data += chunk
    try:
        return json.loads(data.split(b"\n")[0])
    except ValueError:
        return None


def _close_after_peer(connection: socket.socket) -> None:
    """Waits briefly for the peer to close first (so the port's TIME_WAIT lands on its side), then closes."""
    try:
        connection.settimeout(2.0)
        connection.recv(1)
    except OSError:
        pass
    connection.close()
