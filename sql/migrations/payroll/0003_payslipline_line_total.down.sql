ALTER TABLE hrms.payroll_payslipline DROP COLUMN line_total;
