"""Property: whatever bytes the two CSV files hold, preparation ends in a prepared dataset
or in a one-line :class:`MultirecError`, never in another exception or a hang."""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multirec.data.config import DataConfig
from multirec.data.dataset import PreparedDataset
from multirec.data.prepare import prepare
from multirec.errors import MultirecError
from tests.rawdata import write_raw

# Pieces that reach the corners of CSV and of the checks: quoting, separators, line
# ends, encodings, ids that exist or not, both timestamp units, odd numbers.
TOKENS = [
    b"i0",
    b"i1",
    b"i2",
    b"u0",
    b"u1",
    b"1600000000",
    b"1600000000000",
    b"-1",
    b"0",
    b"inf",
    b"nan",
    b"1e400",
    b"9223372036854775808",
    b"x",
    b"",
    b",",
    b'"',
    b'""',
    b'"a,b"',
    b"\n",
    b"\r\n",
    b"\r",
    b" ",
    b"\t",
    b"\x00",
    b"\xff",
    b"\xef\xbb\xbf",
    "标题".encode(),
    "标题".encode("gb18030"),
    b"<b>",
    b"{title}",
]


def mutated(base: bytes) -> st.SearchStrategy[bytes]:
    """``base`` with a few slices replaced by short random bytes or tokens."""
    edit = st.tuples(
        st.integers(0, len(base)),
        st.integers(0, 8),
        st.one_of(
            st.binary(max_size=4), st.text(max_size=4).map(str.encode), st.sampled_from(TOKENS)
        ),
    )

    def apply(edits: list[tuple[int, int, bytes]]) -> bytes:
        out = base
        for at, width, new in edits:
            out = out[:at] + new + out[at + width :]
        return out

    return st.lists(edit, min_size=1, max_size=4).map(apply)


def soup(header: bytes) -> st.SearchStrategy[bytes]:
    """The right header, then lines glued together from tokens."""
    line = st.lists(st.sampled_from(TOKENS), max_size=12).map(b"".join)
    return st.lists(line, max_size=12).map(lambda ls: header + b"\n".join(ls))


def contents(base: bytes) -> st.SearchStrategy[bytes]:
    header = base.split(b"\n", 1)[0] + b"\n"
    return st.one_of(st.binary(max_size=200), soup(header), mutated(base))


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return write_raw(tmp_path_factory.mktemp("fuzz") / "raw", n_users=6, n_items=5, per_user=3)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail a hang instead of waiting for it (the deadline only judges finished examples)."""

    def hang(signum: int, frame: object) -> None:
        raise TimeoutError(f"preparation still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def prepare_or_error(raw: Path, name: str, data: bytes, original: bytes) -> None:
    cfg = DataConfig(name="f", root=str(raw))
    cfg.covers.min_side, cfg.covers.workers, cfg.tags.min_count, cfg.kcore = 16, 1, 1, 1
    (raw / name).write_bytes(data)
    try:
        with time_limit(30), tempfile.TemporaryDirectory() as out:
            ds = prepare(cfg, out, progress=False)
            assert isinstance(ds, PreparedDataset) and ds.n_items > 0
    except MultirecError as exc:
        msg = str(exc)
        assert len(msg.splitlines()) == 1, repr(msg)
    finally:
        (raw / name).write_bytes(original)


FUZZ = settings(
    max_examples=60,
    deadline=timedelta(seconds=10),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("name", ["interactions.csv", "item_info.csv"])
def test_any_bytes_give_a_dataset_or_a_one_line_error(raw, name):
    original = (raw / name).read_bytes()

    @FUZZ
    @given(data=contents(original))
    def check(data: bytes) -> None:
        prepare_or_error(raw, name, data, original)

    check()
