-- +goose Up
-- +goose StatementBegin
ALTER TABLE payments ADD CONSTRAINT payments_invoice_id_fkey FOREIGN KEY (invoice_id) REFERENCES invoices (id);
CREATE INDEX payments_invoice_id_idx ON payments (invoice_id);
-- +goose StatementEnd
