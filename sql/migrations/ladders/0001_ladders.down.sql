DROP TABLE hrms.ladders_level;
DROP TABLE hrms.ladders_aspect;
DROP TABLE hrms.ladders_ladder;
