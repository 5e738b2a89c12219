DROP TABLE hrms.discipline_grievancecategory;
DROP TABLE hrms.discipline_misconductcategory;
