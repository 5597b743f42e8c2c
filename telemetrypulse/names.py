"""The internal Kafka names of one deployment, all derived from its APP_ID (SPEC §2: two deployments with different
APP_IDs share a cluster without sharing a topic or a consumer group).

Every process, test, benchmark and the dev kit takes these names from `internal_names`; nothing spells one out.
The public topics (TOPIC_EVENTS, TOPIC_ALERTS, TOPIC_DLQ) are settings, not derived.
"""

from __future__ import annotations

from dataclasses import dataclass

# Faust names a table's changelog topic `<app id>-<table name>-changelog` (faust.tables.base.Collection).
PARTITION_STATE_TABLE = "partition-state"


@dataclass(frozen=True, slots=True)
class InternalNames:
    app_id: str

    @property
    def worker_group(self) -> str:
        """The stream worker's consumer group: Faust uses the app id itself."""
        return self.app_id

    @property
    def changes_topic(self) -> str:
        """The worker's change records for the sink (changes.ChangesRecord)."""
        return f"{self.app_id}-changes"

    @property
    def partition_state_table(self) -> str:
        return PARTITION_STATE_TABLE

    @property
    def partition_state_changelog(self) -> str:
        """The changelog topic of the partition-state table (state.PartitionState snapshots)."""
        return f"{self.app_id}-{PARTITION_STATE_TABLE}-changelog"

    @property
    def rules_topic(self) -> str:
        """The alert rule versions (rules.RuleVersion), one partition, compacted (rule_feed.RULES_TOPIC_CONFIG)."""
        return f"{self.app_id}-rules"

    @property
    def sink_group(self) -> str:
        """The PostgreSQL sink's consumer group (its positions live in `sink_offsets` under this name)."""
        return f"{self.app_id}-sink"

    @property
    def notifier_group(self) -> str:
        """The webhook notifier's consumer group on the alerts topic."""
        return f"{self.app_id}-notifier"

    @property
    def prefix(self) -> str:
        """What every internal topic of this deployment starts with (Faust's own ones included)."""
        return f"{self.app_id}-"

    def client_id(self, role: str) -> str:
        """The Kafka client id of one role (`admin`, `api`, `simulator`), as brokers log it."""
        return f"{self.app_id}-{role}"


def internal_names(app_id: str) -> InternalNames:
    return InternalNames(app_id)
