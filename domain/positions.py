"""Where a stored event sits in the notification log (the position a reply reports)."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder


def position_of(recorder: ApplicationRecorder, originator_id: UUID, version: int) -> int:
    """The notification id of one stored event; the library has no call for this lookup."""
    # Imported here: each backend's driver is only needed when that backend is in use.
    from eventsourcing.sqlite import SQLiteApplicationRecorder

    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT rowid FROM {recorder.events_table_name} "  # noqa: S608 (our own name)
                "WHERE originator_id = ? AND originator_version = ?",
                (originator_id.hex, version),
            )
            row = cursor.fetchone()
        return int(row[0])

    from eventsourcing.postgres import PostgresApplicationRecorder
    from psycopg.sql import SQL, Identifier

    if isinstance(recorder, PostgresApplicationRecorder):
        statement = SQL(
            "SELECT notification_id FROM {}.{} WHERE originator_id = %s AND originator_version = %s"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, (originator_id, version))
            row = cursor.fetchone()
        assert row is not None, "the command record was saved, so its event exists"
        return int(row["notification_id"])
    from eventsourcing.popo import POPOApplicationRecorder

    if isinstance(recorder, POPOApplicationRecorder):
        # The in-memory store (tests, experiments): a scan of the log is fast enough there.
        last = recorder.max_notification_id() or 0
        for notification in recorder.select_notifications(None, last):
            if (
                notification.originator_id == originator_id
                and notification.originator_version == version
            ):
                return notification.id
        raise AssertionError("the command record was saved, so its event exists")
    raise TypeError(f"no position lookup for {type(recorder).__name__}")
