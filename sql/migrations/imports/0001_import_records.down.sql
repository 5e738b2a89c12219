DROP TABLE hrms.imports_importrecord;
