"""persodose.io"""
