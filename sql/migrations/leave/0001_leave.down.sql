DROP TABLE hrms.leave_leaverequest;
DROP TABLE hrms.leave_leavetype;
