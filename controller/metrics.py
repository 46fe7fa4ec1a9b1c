"""Counters and gauges for /metrics, on a registry of the app's own (no global state)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from controller.store.base import DeviceView


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rejected_messages = Counter(
            "illuminate_device_messages_rejected",
            "Device messages refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.accepted_messages = Counter(
            "illuminate_device_messages_accepted",
            "Device messages taken in, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.published = Counter(
            "illuminate_plans_published",
            "Plan versions acknowledged by the broker",
            registry=self.registry,
        )
        self.drifted = Counter(
            "illuminate_devices_drifted",
            "Applied plans whose device later reported other output",
            registry=self.registry,
        )
        self.adapter_malformed = Counter(
            "illuminate_adapter_messages_malformed",
            "Third-party device messages that could not be read (ignored), by adapter",
            ["adapter"],
            registry=self.registry,
        )
        self.adapter_messages = Counter(
            "illuminate_adapter_messages",
            "Third-party device messages taken in, by adapter",
            ["adapter"],
            registry=self.registry,
        )
        self.dropped_messages = Counter(
            "illuminate_device_messages_dropped",
            "Device messages not kept by the inbox, by reason (coalesced: a newer report "
            "of the same kind from the same device replaced it)",
            ["reason"],
            registry=self.registry,
        )
        self.intake_batches = Counter(
            "illuminate_intake_batches", "Batches the intake stored", registry=self.registry
        )
        self.intake_retries = Counter(
            "illuminate_intake_retries",
            "Intake batches kept and tried again after a database error",
            registry=self.registry,
        )
        self.publish_timeouts = Counter(
            "illuminate_publish_timeouts",
            "Plan publishes the broker did not acknowledge in time (published again)",
            registry=self.registry,
        )
        self.republish_skipped = Counter(
            "illuminate_republish_skipped",
            "Requests to publish a device's plan again within 10 s of the last (dropped)",
            registry=self.registry,
        )
        self.clock_steps = Counter(
            "illuminate_clock_steps",
            "Steps of the system wall clock the controller noticed (and did not follow)",
            registry=self.registry,
        )
        self.expired = Counter(
            "illuminate_commands_expired",
            "Commands whose not_after passed before they could be published (never sent)",
            registry=self.registry,
        )
        self.devices_clock_off = Counter(
            "illuminate_devices_clock_off",
            "Times a device reported a clock off by more than control.clock_tolerance_ms "
            "(counted when it goes beyond; the log names the device)",
            registry=self.registry,
        )
        self.reconciles = Counter(
            "illuminate_reconcile_runs", "Reconciler runs", registry=self.registry
        )
        self.broker_connected = Gauge(
            "illuminate_broker_connected", "1 while connected to the broker", registry=self.registry
        )
        self.intake_backlog = Gauge(
            "illuminate_intake_backlog",
            "Device messages received and not stored yet (waiting, or in the batch being stored)",
            registry=self.registry,
        )
        self.intake_oldest_age = Gauge(
            "illuminate_intake_oldest_age_seconds",
            "How long the oldest device message not stored yet has waited (0 when none)",
            registry=self.registry,
        )
        self.devices = Gauge(
            "illuminate_devices",
            "Registered devices, as of the last public status build",
            registry=self.registry,
        )
        self.devices_offline = Gauge(
            "illuminate_devices_offline",
            "Registered devices not online (last will, or never heard from), as of the last "
            "public status build",
            registry=self.registry,
        )

    def count_devices(self, devices: Iterable[DeviceView]) -> None:
        """Set the device gauges from one snapshot's devices."""
        total = offline = 0
        for device in devices:
            total += 1
            if device.online is not True:
                offline += 1
        self.devices.set(total)
        self.devices_offline.set(offline)

    def accepted(self, kind: str) -> float:
        value = self.registry.get_sample_value(
            "illuminate_device_messages_accepted_total", {"kind": kind}
        )
        return value or 0.0

    def dropped(self, reason: str) -> float:
        value = self.registry.get_sample_value(
            "illuminate_device_messages_dropped_total", {"reason": reason}
        )
        return value or 0.0

    def rejected(self, reason: str) -> float:
        """Current count for one rejection reason (for tests and the console)."""
        value = self.registry.get_sample_value(
            "illuminate_device_messages_rejected_total", {"reason": reason}
        )
        return value or 0.0
