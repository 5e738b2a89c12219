DROP TABLE hrms.imports_shortcutreset;
