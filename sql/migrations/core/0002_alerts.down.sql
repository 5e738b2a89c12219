DROP TABLE hrms.core_alert;
