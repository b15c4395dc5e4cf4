// Filled in by the Dockerfile frontend issue.
enum DockerfileModule {}
