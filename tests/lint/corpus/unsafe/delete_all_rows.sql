DELETE FROM notifications;
