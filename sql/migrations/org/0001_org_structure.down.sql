DROP TABLE hrms.org_team;
DROP TABLE hrms.org_chapter;
DROP TABLE hrms.org_tribe;
DROP TABLE hrms.org_department;
DROP TABLE hrms.org_organization;
