DELETE FROM plans WHERE id IN (7, 8, 9);
