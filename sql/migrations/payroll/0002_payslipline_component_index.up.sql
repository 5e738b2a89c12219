-- hrms:non-transactional
-- Pattern 1 of the large-table playbook: payroll_payslipline holds millions of rows, so the index
-- is built CONCURRENTLY (writes go on meanwhile), which cannot run inside a transaction.
-- IF NOT EXISTS makes a re-run after an interruption safe; a failed build leaves an INVALID
-- index that the runner's verification reports.
CREATE INDEX CONCURRENTLY IF NOT EXISTS payroll_payslipline_component_idx
    ON hrms.payroll_payslipline (pay_component_id);
