"""The `ps` table file: written whole and atomically, read back in id order."""

import os

from mi_server.runtime.proctable import ProcessEntry, read_table, write_table


def test_table_round_trips_in_id_order(tmp_path):
    path = tmp_path / "processes.json"
    write_table(path, [ProcessEntry(2, 30, "MI FIFO"), ProcessEntry(0, 10, "attendant"),
                       ProcessEntry(1, 20, "HTTP worker 1")])
    assert read_table(path) == [ProcessEntry(0, 10, "attendant"),
                                ProcessEntry(1, 20, "HTTP worker 1"),
                                ProcessEntry(2, 30, "MI FIFO")]
    assert sorted(os.listdir(tmp_path)) == ["processes.json"]  # no temporary left behind


def test_a_missing_table_reads_as_empty(tmp_path):
    assert read_table(tmp_path / "gone.json") == []
