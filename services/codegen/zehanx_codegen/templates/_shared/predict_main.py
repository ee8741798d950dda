def main():
    input_path, output_path = sys.argv[1], sys.argv[2]
    state = load(os.environ["ZX_OUTPUT"])
    with open(input_path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    with open(output_path, "w", encoding="utf-8") as f:
        for result in predict(state, rows):
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
