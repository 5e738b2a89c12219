-- hrms:non-transactional
DROP INDEX CONCURRENTLY IF EXISTS hrms.payroll_payslipline_component_idx;
