ALTER TABLE hrms.org_team DROP CONSTRAINT org_team_leader_fkey;
ALTER TABLE hrms.org_chapter DROP CONSTRAINT org_chapter_leader_fkey;
ALTER TABLE hrms.org_tribe DROP CONSTRAINT org_tribe_lead_fkey;
DROP TABLE hrms.employees_employee;
DROP TABLE hrms.employees_jobgrade;
DROP TABLE hrms.employees_jobcategory;
