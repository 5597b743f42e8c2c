"""Internal topic and group names: derived from APP_ID by one function, and the one Faust really uses."""

from __future__ import annotations

import faust

from telemetrypulse.names import internal_names
from telemetrypulse.recovery import FencedTable
from telemetrypulse.settings import Settings


def test_every_internal_name_starts_with_the_app_id():
    names = internal_names("site-7")
    derived = [names.changes_topic, names.partition_state_changelog, names.sink_group, names.notifier_group]
    assert derived == [
        "site-7-changes",
        "site-7-partition-state-changelog",
        "site-7-sink",
        "site-7-notifier",
    ]
    assert names.worker_group == "site-7"
    assert all(name.startswith(names.prefix) for name in derived)
    assert names.client_id("api") == "site-7-api"


def test_two_deployments_share_no_internal_name():
    a, b = internal_names("a"), internal_names("b")
    fields = ("changes_topic", "partition_state_changelog", "sink_group", "notifier_group", "worker_group")
    assert not {getattr(a, f) for f in fields} & {getattr(b, f) for f in fields}


def test_faust_names_the_partition_state_changelog_the_same(tmp_path):
    names = internal_names("unit-names")
    app = faust.App(names.app_id, store="memory://", datadir=str(tmp_path), autodiscover=False)
    table = FencedTable(app, name=names.partition_state_table, default=None, fence=len, partitions=1)
    assert table.changelog_topic_name == names.partition_state_changelog


def test_settings_hand_out_the_same_names():
    settings = Settings(app_id="deploy-1", _env_file=None)
    assert settings.names == internal_names("deploy-1")
    assert (settings.topic_changes, settings.sink_group) == ("deploy-1-changes", "deploy-1-sink")
