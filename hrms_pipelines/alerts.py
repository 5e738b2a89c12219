"""Failure alerts: every failed run is recorded in hrms.core_alert and the log, then handed to the
`alert_notifier` resource, which a deployment swaps for chat (a webhook) or email.

Which notifier serves is chosen at load time from the environment:
HRMS_ALERT_WEBHOOK_URL -> WebhookNotifier (Slack/Teams/Google Chat incoming webhooks take its JSON),
HRMS_ALERT_SMTP_HOST   -> EmailNotifier, otherwise LogNotifier (the log and the table only).
"""

import json
import os
import smtplib
import urllib.request
from dataclasses import asdict, dataclass
from email.message import EmailMessage

import dagster as dg

from hrms_pipelines.resources import READER, HrmsDatabase

DAGSTER_URL_ENV = "HRMS_DAGSTER_URL"


@dataclass
class Alert:
    run_id: str
    job_name: str
    step_key: str | None
    error_class: str | None
    error_message: str
    run_url: str

    def text(self) -> str:
        where = f" at step {self.step_key}" if self.step_key else ""
        return f"HRMS run of {self.job_name} failed{where}: {self.error_message}\n{self.run_url}"


class AlertNotifier(dg.ConfigurableResource):
    """Base notifier: says nothing beyond the log. Subclasses deliver somewhere."""

    def notify(self, alert: Alert) -> str | None:
        """Deliver the alert; return where it went (None: nowhere)."""
        return None


class LogNotifier(AlertNotifier):
    pass


class WebhookNotifier(AlertNotifier):
    """POSTs `{"text": ..., "alert": {...}}` as JSON to a chat incoming-webhook URL."""

    url: str
    timeout_seconds: float = 10.0

    def notify(self, alert: Alert) -> str | None:
        body = json.dumps({"text": alert.text(), "alert": asdict(alert)}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
            response.read()
        return "webhook"


class EmailNotifier(AlertNotifier):
    smtp_host: str
    smtp_port: int = 587
    sender: str
    recipients: list[str]
    username: str = ""
    password: str = ""
    starttls: bool = True

    def notify(self, alert: Alert) -> str | None:
        message = EmailMessage()
        message["Subject"] = f"[HRMS] {alert.job_name} failed"
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(alert.text())
        with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=30) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, self.password)
            smtp.send_message(message)
        return "email"


def notifier_from_environment() -> AlertNotifier:
    if os.environ.get("HRMS_ALERT_WEBHOOK_URL"):
        return WebhookNotifier(url=dg.EnvVar("HRMS_ALERT_WEBHOOK_URL"))
    if os.environ.get("HRMS_ALERT_SMTP_HOST"):
        return EmailNotifier(
            smtp_host=dg.EnvVar("HRMS_ALERT_SMTP_HOST"),
            smtp_port=int(os.environ.get("HRMS_ALERT_SMTP_PORT", "587")),
            sender=os.environ.get("HRMS_ALERT_FROM", "hrms-pipelines@localhost"),
            recipients=[r.strip() for r in os.environ.get("HRMS_ALERT_TO", "").split(",") if r.strip()],
            username=os.environ.get("HRMS_ALERT_SMTP_USER", ""),
            password=dg.EnvVar("HRMS_ALERT_SMTP_PASSWORD") if os.environ.get("HRMS_ALERT_SMTP_PASSWORD") else "",
        )
    return LogNotifier()


def alert_from_failure(context: dg.RunFailureSensorContext) -> Alert:
    run = context.dagster_run
    step_key = error_class = None
    message = context.failure_event.message or "run failed"
    step_failures = context.get_step_failure_events()
    if step_failures:
        first = step_failures[0]
        step_key = first.step_key
        error = getattr(first.event_specific_data, "error", None)
        while error is not None and error.cause is not None:  # the user's error, not Dagster's wrapper
            error = error.cause
        if error is not None:
            error_class = error.cls_name
            message = error.message.strip()
    base = os.environ.get(DAGSTER_URL_ENV, "http://127.0.0.1:3000").rstrip("/")
    return Alert(run.run_id, run.job_name, step_key, error_class, message[:4000], f"{base}/runs/{run.run_id}")


def record_alert(hrms_db: HrmsDatabase, alert: Alert, delivered_to: list[str]) -> None:
    with hrms_db.transaction(READER) as conn:
        conn.execute(
            """
            INSERT INTO hrms.core_alert (run_id, job_name, step_key, error_class, error_message, run_url, delivered_to)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (run_id) DO NOTHING
            """,
            [alert.run_id, alert.job_name, alert.step_key, alert.error_class, alert.error_message, alert.run_url, delivered_to],
        )


@dg.run_failure_sensor(
    name="hrms_run_failure_alerts",
    description="Records every failed run (job, step, error, run link) in hrms.core_alert and the log, "
    "and hands it to the alert_notifier resource (chat webhook or email in a deployment).",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def hrms_run_failure_alerts(
    context: dg.RunFailureSensorContext, hrms_db: HrmsDatabase, alert_notifier: AlertNotifier
) -> None:
    alert = alert_from_failure(context)
    context.log.error(alert.text())
    delivered: list[str] = []
    try:
        if where := alert_notifier.notify(alert):
            delivered.append(where)
    except Exception as exc:  # noqa: BLE001 - the alert must still be recorded
        context.log.error(f"could not deliver the alert for run {alert.run_id}: {exc}")
    try:
        record_alert(hrms_db, alert, delivered)
    except Exception as exc:  # noqa: BLE001 - the database may be what failed
        context.log.error(f"could not record the alert for run {alert.run_id} in hrms.core_alert: {exc}")
