ALTER TABLE public.reports SET SCHEMA analytics;
