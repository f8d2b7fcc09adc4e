CREATE TABLE coupons (id bigserial PRIMARY KEY, code text NOT NULL);
CREATE INDEX orders_coupon_code_idx ON orders (coupon_code);
