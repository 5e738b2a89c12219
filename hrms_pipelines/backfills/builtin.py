"""The registered backfills of this code location (the seed's examples for this schema, and one on a
large payroll table). Each one's defaults must make a UI launch safe: UI launches pass no config."""

from __future__ import annotations

from hrms_pipelines.backfills import field
from hrms_pipelines.backfills.field import FieldSpec, FilterSpec
from hrms_pipelines.backfills.registry import Batch, BackfillRegistry, Options, registry


def register_builtin(target: BackfillRegistry) -> None:
    @target.backfill(
        "set_employee_status",
        table="employees_employee",
        description="Give every employee without a status one: 'terminated' when the termination date has "
                    "passed, else 'active'. Placeholders (leaders the org import created before the users "
                    "file) are left for the users import.",
        pending="status IS NULL AND NOT is_placeholder",
        defaults=Options(batch_size=1000, sleep_seconds=0.1),
    )
    def set_employee_status(batch: Batch) -> int:
        return batch.update(
            "status = CASE WHEN termination_date <= current_date THEN 'terminated' ELSE 'active' END, updated_at = now()")

    @target.backfill(
        "compute_employee_tenure",
        table="employees_employee",
        description="Calculate tenure_years from hire_date (to the termination date for leavers, else to "
                    "today), in years of 365.25 days, for employees that have a hire date and no tenure.",
        pending="tenure_years IS NULL AND hire_date IS NOT NULL",
        defaults=Options(batch_size=1000, sleep_seconds=0.1),
    )
    def compute_employee_tenure(batch: Batch) -> int:
        return batch.update(
            "tenure_years = round(greatest(least(coalesce(termination_date, current_date), current_date) - hire_date, 0)"
            " / 365.25, 2), updated_at = now()")

    field.register(
        target, "set_department_code_unknown",
        spec=FieldSpec(table="employees_employee", column="department_code", value="UNKNOWN",
                       filter=FilterSpec(column="department_code", operator="is_null")),
        description="Set department_code to 'UNKNOWN' where it is null (the seed's generic field backfill, "
                    "declared instead of written).",
        defaults=Options(batch_size=500, sleep_seconds=0.2),
    )

    @target.backfill(
        "compute_payslipline_line_total",
        table="payroll_payslipline",
        description="Fill payroll_payslipline.line_total (added nullable by payroll/0003) with amount x quantity, "
                    "step 2 of the playbook's add-a-NOT-NULL-column pattern on a table of millions of rows.",
        pending="line_total IS NULL",
        defaults=Options(batch_size=5000, sleep_seconds=0.04, target_batch_ms=150, max_batch_size=100_000),
    )
    def compute_payslipline_line_total(batch: Batch) -> int:
        return batch.update("line_total = round(amount * quantity, 2)")


register_builtin(registry)
