UPDATE users
SET organization_id = (SELECT m.organization_id FROM memberships m WHERE m.user_id = users.id LIMIT 1);
