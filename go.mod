module github.com/idepool/idepool

go 1.26.8
