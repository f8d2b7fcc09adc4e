CREATE UNLOGGED TABLE page_views_buffer (id bigint, viewed_at timestamptz);
