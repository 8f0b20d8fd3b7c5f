"""A PyTorch Lightning template: plain nets, Lightning modules that train them, data modules that feed them."""
