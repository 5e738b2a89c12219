"""Failure alerts: every failed run is recorded in hrms.core_alert and the log, then handed to the
`alert_notifier` resource, which a deployment swaps for chat (a webhook) or email.

Which notifier serves is chosen at load time from the environment:
HRMS_ALERT_WEBHOOK_URL -> WebhookNotifier (Slack/Teams/Google Chat incoming webhooks take its JSON),
HRMS_ALERT_SMTP_HOST   -> EmailNotifier, otherwise LogNotifier (the log and the table only).

No payload (log line, hrms.core_alert row, webhook JSON, email) holds a personal or pay value in
clear: the error is the step's sanitised failure (every op is behind hrms_pipelines.errors'
boundary), and every text field of the Alert passes through `privacy.scrub_text` once more when it
is built, a last line of defence for a failure that did not come through the boundary.
"""

import json
import os
import smtplib
import urllib.request
from dataclasses import asdict, dataclass
from email.message import EmailMessage

import dagster as dg

from hrms_pipelines import privacy
from hrms_pipelines.errors import error_boundary, safe_message
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


WEBHOOK_URL_ENV = "HRMS_ALERT_WEBHOOK_URL"
SMTP_HOST_ENV = "HRMS_ALERT_SMTP_HOST"


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


class WebhookNotifier(AlertNotifier):
    """POSTs `{"text": ..., "alert": {...}}` as JSON to the chat incoming-webhook URL in
    HRMS_ALERT_WEBHOOK_URL (HRMS_ALERT_TIMEOUT_SECONDS, default 10).

    No config fields: where alerts go is deployment configuration, read when an alert is sent. (A
    field of a resource bound in Definitions appears in every job's run config, where a launcher
    could point it at a server of their own.)"""

    def notify(self, alert: Alert) -> str | None:
        url = _env(WEBHOOK_URL_ENV)
        if not url:
            raise RuntimeError(f"{WEBHOOK_URL_ENV} is not set: nowhere to send the alert")
        body = json.dumps({"text": alert.text(), "alert": asdict(alert)}).encode()
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=float(_env("HRMS_ALERT_TIMEOUT_SECONDS", "10"))) as response:
            response.read()
        return "webhook"


class EmailNotifier(AlertNotifier):
    """Sends the alert by email through HRMS_ALERT_SMTP_HOST (HRMS_ALERT_SMTP_PORT, default 587),
    from HRMS_ALERT_FROM to the comma-separated HRMS_ALERT_TO, logging in with HRMS_ALERT_SMTP_USER /
    HRMS_ALERT_SMTP_PASSWORD when set, STARTTLS unless HRMS_ALERT_SMTP_STARTTLS=false. No config
    fields, like WebhookNotifier."""

    def notify(self, alert: Alert) -> str | None:
        host = _env(SMTP_HOST_ENV)
        recipients = [r.strip() for r in _env("HRMS_ALERT_TO").split(",") if r.strip()]
        if not host or not recipients:
            raise RuntimeError(f"{SMTP_HOST_ENV} and HRMS_ALERT_TO must both be set to send alerts by email")
        message = EmailMessage()
        message["Subject"] = f"[HRMS] {alert.job_name} failed"
        message["From"] = _env("HRMS_ALERT_FROM", "hrms-pipelines@localhost")
        message["To"] = ", ".join(recipients)
        message.set_content(alert.text())
        with smtplib.SMTP(host, int(_env("HRMS_ALERT_SMTP_PORT", "587")), timeout=30) as smtp:
            if _env("HRMS_ALERT_SMTP_STARTTLS", "true").lower() not in ("0", "false", "no"):
                smtp.starttls()
            if user := _env("HRMS_ALERT_SMTP_USER"):
                smtp.login(user, os.environ.get("HRMS_ALERT_SMTP_PASSWORD", ""))
            smtp.send_message(message)
        return "email"


def notifier_from_environment() -> AlertNotifier:
    if _env(WEBHOOK_URL_ENV):
        return WebhookNotifier()
    if _env(SMTP_HOST_ENV):
        return EmailNotifier()
    return LogNotifier()


def _failure_of(event: dg.DagsterEvent) -> tuple[str | None, str | None]:
    """(error class, message) of a step failure: the description of the sanitised dg.Failure the
    boundary raised (with the original class from its metadata), else the innermost error's message."""
    data = event.step_failure_data if event.event_type_value == "STEP_FAILURE" else None
    error = getattr(event.event_specific_data, "error", None)
    user = data.user_failure_data if data is not None else None
    while error is not None and error.cause is not None:  # the user's error, not Dagster's wrapper
        error = error.cause
    error_class = error.cls_name if error is not None else None
    if user is not None and user.description:
        original = (user.metadata or {}).get("error_class")
        return (getattr(original, "value", None) or error_class), user.description
    return error_class, (error.message if error is not None else None)


def alert_from_failure(context: dg.RunFailureSensorContext) -> Alert:
    run = context.dagster_run
    step_key = error_class = None
    message = context.failure_event.message or "run failed"
    step_failures = context.get_step_failure_events()
    if step_failures:
        first = step_failures[0]
        step_key = first.step_key
        error_class, error_message = _failure_of(first)
        if error_message:
            message = error_message.strip()
    base = os.environ.get(DAGSTER_URL_ENV, "http://127.0.0.1:3000").rstrip("/")
    return Alert(run.run_id, run.job_name, step_key, error_class, privacy.scrub_text(message)[:4000],
                 f"{base}/runs/{run.run_id}")


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
@error_boundary
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
        context.log.error(f"could not deliver the alert for run {alert.run_id}: {safe_message(exc)}")
    try:
        record_alert(hrms_db, alert, delivered)
    except Exception as exc:  # noqa: BLE001 - the database may be what failed
        context.log.error(f"could not record the alert for run {alert.run_id} in hrms.core_alert: {safe_message(exc)}")
