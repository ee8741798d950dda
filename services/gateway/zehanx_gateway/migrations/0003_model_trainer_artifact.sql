-- The trainer's id of a model's stored artifact (TrainResult.artifact_id): what the gateway's Predict
-- hands to TrainerService.Predict, which runs the model's predict.py in the sandbox. Null for a model
-- recorded without one (Predict then answers FAILED_PRECONDITION, saying so).
alter table zehanx.models
    add column trainer_artifact_id text
    check (trainer_artifact_id is null or trainer_artifact_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$');
