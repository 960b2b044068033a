//! Azure Table Storage over REST (DESIGN §8).
