-- Step 1 of the playbook's three-step pattern for a NOT NULL column on a large table
-- (payroll_payslipline holds millions of rows):
--   1. this migration: add the column nullable and without a default (catalogue-only, no rewrite);
--   2. the registered backfill `compute_payslipline_line_total` (data_backfill job) fills it in
--      keyset batches of ~200 ms, resumable;
--   3. once the backfill reports 0 remaining in every environment, a later migration adds
--      CHECK (line_total IS NOT NULL) NOT VALID, then VALIDATE CONSTRAINT, then SET NOT NULL
--      (which uses the validated check instead of scanning under an ACCESS EXCLUSIVE lock).
ALTER TABLE hrms.payroll_payslipline ADD COLUMN line_total numeric(16,2);

COMMENT ON COLUMN hrms.payroll_payslipline.line_total IS
    'amount x quantity, rounded to 2 places; filled for existing rows by the compute_payslipline_line_total backfill';
