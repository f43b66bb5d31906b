-- Hand-written (drizzle-kit does not generate triggers). A deleted account's
-- events keep its id only: an event written after the deletion (one another
-- instance still held in its buffer) loses its client details as it is stored.
CREATE FUNCTION "security_events_forget_deleted_clients"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM "users" WHERE "id" = NEW."user_id") THEN
		NEW."ip" := NULL;
		NEW."user_agent" := NULL;
	END IF;
	RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "security_events_forget_deleted_clients" BEFORE INSERT ON "security_events"
	FOR EACH ROW WHEN (NEW."user_id" IS NOT NULL) EXECUTE FUNCTION "security_events_forget_deleted_clients"();
