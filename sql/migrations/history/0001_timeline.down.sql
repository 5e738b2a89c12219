DROP TABLE hrms.history_senioritysnapshot;
DROP TABLE hrms.history_compensationsnapshot;
DROP TABLE hrms.history_timelineevent;
