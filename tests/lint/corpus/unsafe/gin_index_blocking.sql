CREATE INDEX documents_body_search_idx ON documents USING gin (to_tsvector('english', body));
